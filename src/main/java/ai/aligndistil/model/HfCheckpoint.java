package ai.aligndistil.model;

import ai.aligndistil.io.DType;
import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

import ai.aligndistil.io.Json;
import ai.aligndistil.io.Safetensors;

/**
 * Hugging Face model folders: {@code config.json} plus {@code model.safetensors} or a sharded
 * {@code model.safetensors.index.json}, with Hugging Face tensor names.
 *
 * <p><b>Loading</b> maps each safetensors file into memory, wraps every tensor's bytes with
 * {@code from_blob} (no copy) and copies it <i>once</i> into the model's owned, trainable parameter storage,
 * converting the dtype on the way if needed; the mapping is closed afterwards. Every expected tensor must be
 * present with the shape the config implies, and every tensor in the files must belong to the config
 * (apart from {@code *.rotary_emb.inv_freq} buffers and a redundant {@code lm_head.weight} of a tied model);
 * otherwise a {@link CheckpointException} names the tensor and the file.
 *
 * <p><b>Saving</b> writes {@code model.safetensors} (metadata {@code format=pt}, atomic: temporary file, fsync,
 * rename) and then {@code config.json} (same way), and removes a stale sharded index, so the folder loads in
 * Hugging Face transformers and back here.
 */
@SuppressWarnings("try")
public final class HfCheckpoint {
    private HfCheckpoint() {}

    public static final String WEIGHTS = "model.safetensors";
    public static final String INDEX = "model.safetensors.index.json";

    /** A model folder whose weights or config are missing, misshaped or inconsistent. */
    public static final class CheckpointException extends IOException {
        private static final long serialVersionUID = 1L;
        public CheckpointException(String message) { super(message); }
    }

    /** Loads a folder in the dtype its config declares (bfloat16 stays bfloat16, anything else becomes float32). */
    public static CausalLM load(Path dir) throws IOException {
        return load(dir, null);
    }

    /**
     * Loads a folder.
     *
     * @param dtype the parameter dtype ({@code Float} or {@code BFloat16}); null: bfloat16 if config.json says
     *              so, else float32
     */
    public static CausalLM load(Path dir, ScalarType dtype) throws IOException {
        TorchRuntime.init();
        ModelConfig config = ModelConfig.read(dir);
        if (dtype == null) dtype = "bfloat16".equals(config.torchDtype()) ? ScalarType.BFloat16 : ScalarType.Float;
        List<Safetensors.Reader> readers = openAll(dir);
        try {
            Map<String, Safetensors.Reader> where = new LinkedHashMap<>();
            for (Safetensors.Reader r : readers) {
                for (String name : r.tensors().keySet()) {
                    Safetensors.Reader prev = where.put(name, r);
                    if (prev != null) throw new CheckpointException("tensor '" + name + "' appears in both " + prev.path() + " and " + r.path());
                }
            }
            Map<String, long[]> expected = config.parameterShapes();
            validate(dir, config, expected, where);
            CausalLM model = new CausalLM(config, dtype);
            try (NoGradGuard g = new NoGradGuard()) {
                for (Map.Entry<String, Tensor> e : model.namedParameters().entrySet()) {
                    Safetensors.Reader r = where.get(e.getKey());
                    Safetensors.TensorInfo info = r.info(e.getKey());
                    MemorySegment seg = r.segment(e.getKey());
                    try (PointerScope scope = new PointerScope()) {
                        Tensor src = torch.from_blob(Tensors.pointer(seg.address()), info.shape(), Tensors.options(Tensors.torchType(info.dtype())));
                        e.getValue().copy_(src);
                    }
                }
            }
            return model;
        } finally {
            for (Safetensors.Reader r : readers) r.close();
        }
    }

    /**
     * Loads a folder <i>without copying the weights</i>: every parameter is a {@code from_blob} view of the
     * read-only memory mapping of the safetensors files, which stays open for the model's lifetime. The model
     * is frozen (no gradients) and its dtype is the files' dtype (all tensors must share one: F32 or BF16).
     * Meant for the frozen reference models of a run, under {@code InferenceMode}: their weights then cost page
     * cache, not private memory, and load in milliseconds. Writing to such a model crashes the process, so it
     * must never be given to an optimizer.
     */
    public static CausalLM loadMapped(Path dir) throws IOException {
        TorchRuntime.init();
        ModelConfig config = ModelConfig.read(dir);
        List<Safetensors.Reader> readers = openAll(dir);
        boolean ok = false;
        try {
            Map<String, Safetensors.Reader> where = new LinkedHashMap<>();
            for (Safetensors.Reader r : readers) for (String name : r.tensors().keySet()) where.put(name, r);
            Map<String, long[]> expected = config.parameterShapes();
            validate(dir, config, expected, where);
            DType fileType = null;
            Map<String, Tensor> weights = new LinkedHashMap<>();
            for (String name : expected.keySet()) {
                Safetensors.Reader r = where.get(name);
                Safetensors.TensorInfo info = r.info(name);
                if (info.dtype() != DType.F32 && info.dtype() != DType.BF16)
                    throw new CheckpointException(r.path() + ": tensor '" + name + "' is " + info.dtype().name() + "; a mapped load needs F32 or BF16");
                if (fileType == null) fileType = info.dtype();
                else if (fileType != info.dtype())
                    throw new CheckpointException(r.path() + ": tensor '" + name + "' is " + info.dtype().name() + " but earlier tensors are " + fileType.name() + "; a mapped load needs one dtype");
                weights.put(name, torch.from_blob(Tensors.pointer(r.segment(name).address()), info.shape(), Tensors.options(Tensors.torchType(info.dtype()))));
            }
            List<Safetensors.Reader> keep = List.copyOf(readers);
            CausalLM m = new CausalLM(config, Tensors.torchType(fileType), weights, () -> {
                for (Safetensors.Reader r : keep) r.close();
            });
            ok = true;
            return m;
        } finally {
            if (!ok) for (Safetensors.Reader r : readers) r.close();
        }
    }

    /** The names, dtypes and shapes of a folder's tensors, after the same validation as {@link #load}. */
    public static Map<String, Safetensors.TensorInfo> inspect(Path dir) throws IOException {
        ModelConfig config = ModelConfig.read(dir);
        List<Safetensors.Reader> readers = openAll(dir);
        try {
            Map<String, Safetensors.Reader> where = new LinkedHashMap<>();
            Map<String, Safetensors.TensorInfo> out = new LinkedHashMap<>();
            for (Safetensors.Reader r : readers) {
                for (var e : r.tensors().entrySet()) {
                    where.put(e.getKey(), r);
                    out.put(e.getKey(), e.getValue());
                }
            }
            validate(dir, config, config.parameterShapes(), where);
            return out;
        } finally {
            for (Safetensors.Reader r : readers) r.close();
        }
    }

    private static void validate(Path dir, ModelConfig c, Map<String, long[]> expected, Map<String, Safetensors.Reader> where) throws IOException {
        for (Map.Entry<String, long[]> e : expected.entrySet()) {
            Safetensors.Reader r = where.get(e.getKey());
            if (r == null)
                throw new CheckpointException(dir + ": missing tensor '" + e.getKey() + "' (config.json describes a " + c.architecture()
                        + " with " + c.numLayers() + " layers" + (c.tieWordEmbeddings() ? "" : ", untied lm_head") + ")");
            Safetensors.TensorInfo info = r.info(e.getKey());
            if (!Arrays.equals(info.shape(), e.getValue()))
                throw new CheckpointException(r.path() + ": tensor '" + e.getKey() + "' has shape " + info.shapeString()
                        + " but config.json implies " + Arrays.toString(e.getValue()));
            if (!info.dtype().isFloatingPoint())
                throw new CheckpointException(r.path() + ": tensor '" + e.getKey() + "' has dtype " + info.dtype().name() + ", expected a floating-point type");
        }
        for (Map.Entry<String, Safetensors.Reader> e : where.entrySet()) {
            String name = e.getKey();
            if (expected.containsKey(name) || name.endsWith(".rotary_emb.inv_freq")) continue;
            if (name.equals("lm_head.weight") && c.tieWordEmbeddings()) continue;
            throw new CheckpointException(e.getValue().path() + ": unexpected tensor '" + name + "': config.json describes a "
                    + c.architecture() + " with num_hidden_layers=" + c.numLayers() + ", tie_word_embeddings=" + c.tieWordEmbeddings()
                    + ", q/k/v bias=" + c.attentionBias() + ", which has no such tensor");
        }
    }

    private static List<Safetensors.Reader> openAll(Path dir) throws IOException {
        if (!Files.isDirectory(dir)) throw new CheckpointException(dir + ": not a folder");
        List<Path> files = new ArrayList<>();
        if (Files.isRegularFile(dir.resolve(WEIGHTS))) {
            files.add(dir.resolve(WEIGHTS));
        } else if (Files.isRegularFile(dir.resolve(INDEX))) {
            Map<String, Object> idx;
            try {
                idx = Json.parseObject(Files.readString(dir.resolve(INDEX)));
            } catch (Json.JsonException e) {
                throw new CheckpointException(dir.resolve(INDEX) + ": not valid JSON: " + e.getMessage());
            }
            if (!(idx.get("weight_map") instanceof Map<?, ?> wm) || wm.isEmpty())
                throw new CheckpointException(dir.resolve(INDEX) + ": no weight_map");
            for (Object f : wm.values()) {
                if (!(f instanceof String s) || s.contains("/") || s.contains("\\"))
                    throw new CheckpointException(dir.resolve(INDEX) + ": bad shard file name " + Json.write(f));
                Path p = dir.resolve(s);
                if (!files.contains(p)) files.add(p);
            }
        } else {
            throw new CheckpointException(dir + ": no " + WEIGHTS + " or " + INDEX);
        }
        List<Safetensors.Reader> readers = new ArrayList<>();
        try {
            for (Path p : files) readers.add(Safetensors.open(p));
        } catch (IOException | RuntimeException e) {
            for (Safetensors.Reader r : readers) r.close();
            throw e;
        }
        return readers;
    }

    /** Saves in the model's own dtype. */
    public static void save(CausalLM model, Path dir) throws IOException {
        save(model, dir, model.dtype());
    }

    /**
     * Writes {@code dir/model.safetensors} and {@code dir/config.json} (both atomic), creating {@code dir}.
     *
     * @param fileDtype dtype of the saved weights ({@code Float} or {@code BFloat16})
     */
    public static void save(CausalLM model, Path dir, ScalarType fileDtype) throws IOException {
        Files.createDirectories(dir);
        Safetensors.Writer w = new Safetensors.Writer().metadata("format", "pt");
        List<Tensor> keep = new ArrayList<>();
        try (PointerScope scope = new PointerScope(); NoGradGuard g = new NoGradGuard()) {
            for (Map.Entry<String, Tensor> e : model.namedParameters().entrySet()) {
                Tensor t = Tensors.host(e.getValue().detach().to(fileDtype).contiguous());
                keep.add(t);
                w.add(e.getKey(), Tensors.fileType(fileDtype), Tensors.shape(t), Tensors.segment(t));
            }
            w.write(dir.resolve(WEIGHTS));
        }
        writeAtomically(dir.resolve("config.json"), Json.write(model.config().toJson(Tensors.hfName(fileDtype))) + "\n");
        Files.deleteIfExists(dir.resolve(INDEX));
    }

    /** Writes a small text file atomically: temporary file in the same folder, fsync, rename, fsync of the folder. */
    public static void writeAtomically(Path target, String text) throws IOException {
        ai.aligndistil.io.AtomicFiles.writeString(target, text);
    }
}
