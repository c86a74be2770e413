package ai.aligndistil.train;

import ai.aligndistil.io.DType;
import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.zip.CRC32C;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;

import ai.aligndistil.io.Safetensors;
import ai.aligndistil.model.Tensors;

/**
 * One file holding everything a training run needs to resume bit-exactly: the model parameters, the AdamW
 * state and step count, the training step, the data position, the Java {@link Rng} state and libtorch's
 * default CPU generator state, plus free-form string entries.
 *
 * <p>Format: a safetensors file (tensors {@code model/<name>}, {@code optim/<name>.exp_avg|exp_avg_sq|master},
 * {@code rng/torch}; scalars in the metadata) whose metadata carries a CRC32C {@code checksum} over every other
 * metadata entry and every tensor's name, dtype, shape and bytes. It is written atomically (temporary file,
 * fsync, rename, fsync of the folder), so a crash mid-write leaves the previous checkpoint or none; a truncated
 * or corrupted file is refused with a {@link CorruptCheckpointException} (or the reader's own error) before
 * anything is loaded.
 */
@SuppressWarnings("try")
public final class TrainCheckpoint {
    private TrainCheckpoint() {}

    static final String FORMAT = "aligndistil-train-1";

    /**
     * Where a run stands.
     *
     * @param step         optimizer steps completed
     * @param dataPosition the caller's position in its data (e.g. sequences consumed)
     * @param rngState     the state of the run's {@link Rng}
     * @param extra        free-form entries saved alongside (e.g. the run's configuration)
     */
    public record State(long step, long dataPosition, long rngState, Map<String, String> extra) {
        public State {
            extra = extra == null ? Map.of() : Map.copyOf(extra);
        }
    }

    /** A checkpoint whose checksum or structure does not match its contents. */
    public static final class CorruptCheckpointException extends IOException {
        private static final long serialVersionUID = 1L;
        public CorruptCheckpointException(String message) { super(message); }
    }

    /** Writes a checkpoint atomically to {@code file}. */
    public static void save(Path file, Map<String, Tensor> model, AdamW optimizer, State state) throws IOException {
        Map<String, String> meta = new LinkedHashMap<>();
        meta.put("format", FORMAT);
        meta.put("step", Long.toString(state.step()));
        meta.put("data_position", Long.toString(state.dataPosition()));
        meta.put("rng_state", Long.toString(state.rngState()));
        meta.put("optimizer_step", Long.toString(optimizer == null ? 0 : optimizer.stepCount()));
        for (var e : state.extra().entrySet()) meta.put("extra." + e.getKey(), e.getValue());
        try (PointerScope scope = new PointerScope(); NoGradGuard g = new NoGradGuard()) {
            Map<String, Tensor> all = new LinkedHashMap<>();
            for (var e : model.entrySet()) all.put("model/" + e.getKey(), e.getValue().detach().contiguous());
            if (optimizer != null) for (var e : optimizer.stateTensors().entrySet()) all.put("optim/" + e.getKey(), e.getValue().contiguous());
            all.put("rng/torch", torch.getDefaultCPUGenerator().get_state().contiguous());
            Map<String, Entry> entries = new LinkedHashMap<>();
            for (var e : all.entrySet()) {
                Tensor t = Tensors.host(e.getValue()); // device state is written from a host copy
                entries.put(e.getKey(), new Entry(Tensors.fileType(t.scalar_type()), Tensors.shape(t), Tensors.segment(t)));
            }
            meta.put("checksum", checksum(meta, entries));
            Safetensors.Writer w = new Safetensors.Writer();
            for (var e : meta.entrySet()) w.metadata(e.getKey(), e.getValue());
            for (var e : entries.entrySet()) w.add(e.getKey(), e.getValue().dtype(), e.getValue().shape(), e.getValue().data());
            w.write(file);
        }
    }

    /**
     * Verifies a checkpoint and copies it into the live model parameters and optimizer state (which must have
     * the same names and shapes), restores libtorch's default generator, and returns the run state.
     * Nothing is modified when verification fails.
     */
    public static State load(Path file, Map<String, Tensor> model, AdamW optimizer) throws IOException {
        try (Safetensors.Reader r = Safetensors.open(file)) {
            Map<String, String> meta = new LinkedHashMap<>(r.metadata());
            if (!FORMAT.equals(meta.get("format"))) throw new CorruptCheckpointException(file + ": not a training checkpoint (format " + meta.get("format") + ")");
            String want = meta.remove("checksum");
            if (want == null) throw new CorruptCheckpointException(file + ": no checksum");
            Map<String, Entry> entries = new LinkedHashMap<>();
            for (var e : r.tensors().entrySet())
                entries.put(e.getKey(), new Entry(e.getValue().dtype(), e.getValue().shape(), r.segment(e.getKey())));
            String got = checksum(meta, entries);
            if (!got.equals(want)) throw new CorruptCheckpointException(file + ": checksum mismatch (stored " + want + ", computed " + got + "): the file is corrupted");

            Map<String, Tensor> targets = new LinkedHashMap<>();
            for (var e : model.entrySet()) targets.put("model/" + e.getKey(), e.getValue());
            if (optimizer != null) for (var e : optimizer.stateTensors().entrySet()) targets.put("optim/" + e.getKey(), e.getValue());
            for (var e : targets.entrySet()) {
                Entry src = entries.get(e.getKey());
                if (src == null) throw new CorruptCheckpointException(file + ": missing tensor '" + e.getKey() + "'");
                long[] shape = Tensors.shape(e.getValue());
                if (!Arrays.equals(shape, src.shape()))
                    throw new CorruptCheckpointException(file + ": tensor '" + e.getKey() + "' has shape " + Arrays.toString(src.shape()) + ", the live one " + Arrays.toString(shape));
            }
            try (NoGradGuard g = new NoGradGuard()) {
                for (var e : targets.entrySet()) {
                    Entry src = entries.get(e.getKey());
                    try (PointerScope scope = new PointerScope()) {
                        e.getValue().copy_(wrap(src));
                    }
                }
                Entry rng = entries.get("rng/torch");
                if (rng != null) {
                    try (PointerScope scope = new PointerScope()) {
                        torch.getDefaultCPUGenerator().set_state(wrap(rng).clone());
                    }
                }
            }
            if (optimizer != null) optimizer.setStepCount(Long.parseLong(meta.getOrDefault("optimizer_step", "0")));
            Map<String, String> extra = new HashMap<>();
            for (var e : meta.entrySet()) if (e.getKey().startsWith("extra.")) extra.put(e.getKey().substring(6), e.getValue());
            return new State(Long.parseLong(meta.get("step")), Long.parseLong(meta.get("data_position")), Long.parseLong(meta.get("rng_state")), extra);
        } catch (NumberFormatException e) {
            throw new CorruptCheckpointException(file + ": bad metadata: " + e.getMessage());
        }
    }

    private record Entry(DType dtype, long[] shape, MemorySegment data) {}

    private static Tensor wrap(Entry e) {
        return torch.from_blob(Tensors.pointer(e.data().address()), e.shape(), Tensors.options(Tensors.torchType(e.dtype())));
    }

    /** CRC32C over the sorted metadata and the sorted tensors (name, dtype, shape, bytes). */
    static String checksum(Map<String, String> meta, Map<String, Entry> entries) {
        CRC32C crc = new CRC32C();
        for (var e : new TreeMap<>(meta).entrySet()) {
            if (e.getKey().equals("checksum")) continue;
            crc.update((e.getKey() + "=" + e.getValue() + "\n").getBytes(StandardCharsets.UTF_8));
        }
        List<String> names = new ArrayList<>(entries.keySet());
        names.sort(null);
        for (String n : names) {
            Entry e = entries.get(n);
            crc.update((n + ":" + e.dtype().name() + ":" + Arrays.toString(e.shape()) + "\n").getBytes(StandardCharsets.UTF_8));
            MemorySegment d = e.data();
            for (long o = 0; o < d.byteSize(); o += 1L << 30) crc.update(d.asSlice(o, Math.min(1L << 30, d.byteSize() - o)).asByteBuffer());
        }
        return String.format("%08x", crc.getValue());
    }
}
