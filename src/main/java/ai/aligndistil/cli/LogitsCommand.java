package ai.aligndistil.cli;

import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.logging.Level;
import java.util.logging.Logger;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.InferenceMode;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;

import ai.aligndistil.io.Safetensors;
import ai.aligndistil.model.CausalLM;
import ai.aligndistil.model.Devices;
import ai.aligndistil.model.HfCheckpoint;
import ai.aligndistil.model.HfTokenizer;
import ai.aligndistil.model.ModelConfig;
import ai.aligndistil.model.Tensors;
import ai.aligndistil.model.TorchRuntime;

/**
 * {@code aligndistil logits --model DIR (--ids 1,2,3 | --text "...") --out FILE [--dtype f32|bf16]}: one forward
 * pass of a Hugging Face model folder, writing the logits as a float32 safetensors tensor {@code logits} of
 * shape [T, V].
 *
 * <p>The model runs in float32 unless {@code --dtype bf16} (whatever the checkpoint's dtype); the output is
 * float32 either way. {@code --text} tokenises the raw text with the folder's {@code tokenizer.json}, adding no
 * special tokens and no chat template; a folder without a tokenizer works with {@code --ids}. The output is
 * written atomically, so a failure leaves no file. Errors print one line on stderr; exit codes: 0 success,
 * 2 usage error, 1 any other failure.
 */
@SuppressWarnings("try")
public final class LogitsCommand {
    private LogitsCommand() {}

    static final String USAGE = "usage: aligndistil logits --model DIR (--ids 1,2,3 | --text TEXT) --out FILE.safetensors [--dtype f32|bf16] [--device auto|cpu|cuda|cuda:N]";
    /** Held so the level set below is not lost when the logger would otherwise be collected. */
    private static final Logger RUNTIME_LOG = Logger.getLogger(TorchRuntime.class.getName());

    private static final class UsageException extends Exception {
        private static final long serialVersionUID = 1L;
        UsageException(String m) { super(m); }
    }

    private record Args(Path model, long[] ids, String text, Path out, ScalarType dtype, String device) {}

    /** Runs the command with {@code System.out}/{@code System.err}; returns the exit code. */
    public static int run(String[] args) {
        return run(args, System.out, System.err);
    }

    /** Runs the command; returns the exit code (0 ok, 1 failure, 2 usage error). */
    public static int run(String[] args, PrintStream out, PrintStream err) {
        Args a;
        try {
            a = parse(args);
        } catch (UsageException e) {
            err.println("logits: " + e.getMessage() + " (" + USAGE + ")");
            return 2;
        }
        Devices.Choice device;
        try {
            device = Devices.resolve(a.device()); // before any work: a device that cannot be used is a usage error
        } catch (Devices.UnavailableException e) {
            err.println("logits: " + e.getMessage());
            return 2;
        }
        try {
            ModelConfig config = ModelConfig.read(a.model());
            HfCheckpoint.inspect(a.model());           // validates names and shapes before any native work
            long[] ids = a.ids();
            if (ids == null) {
                Path tokFile = a.model().resolve("tokenizer.json");
                if (!Files.isRegularFile(tokFile)) throw new IllegalArgumentException(a.model() + " has no tokenizer.json; use --ids");
                try (HfTokenizer tok = HfTokenizer.load(tokFile)) {
                    ids = tok.encode(a.text());
                }
                if (ids.length == 0) throw new IllegalArgumentException("--text tokenises to no tokens");
            }
            for (long id : ids)
                if (id < 0 || id >= config.vocabSize())
                    throw new IllegalArgumentException("token id " + id + " is outside the vocabulary [0, " + config.vocabSize() + ")");
            RUNTIME_LOG.setLevel(Level.WARNING);
            TorchRuntime.init();
            CausalLM model = HfCheckpoint.load(a.model(), a.dtype()).to(device);
            int t = ids.length, v = config.vocabSize();
            try (PointerScope s = new PointerScope(); InferenceMode im = new InferenceMode()) {
                Tensor logits = Tensors.host(model.forward(Tensors.fromLongs(ids, 1, t)).to(ScalarType.Float).contiguous());
                new Safetensors.Writer()
                        .metadata("format", "pt")
                        .add("logits", Safetensors.DType.F32, new long[] {t, v}, Tensors.segment(logits))
                        .write(a.out());
            }
            out.println("logits [" + t + ", " + v + "] (" + Tensors.hfName(a.dtype()) + ") -> " + a.out());
            return 0;
        } catch (Throwable e) {
            err.println("logits: " + oneLine(e));
            return 1;
        }
    }

    private static Args parse(String[] args) throws UsageException {
        Path model = null, outFile = null;
        String ids = null, text = null, dtype = "f32", device = "auto";
        for (int i = 0; i < args.length; i++) {
            String k = args[i];
            if (k.equals("-h") || k.equals("--help")) throw new UsageException("help requested");
            if (!k.startsWith("--")) throw new UsageException("unexpected argument '" + k + "'");
            if (i + 1 >= args.length) throw new UsageException(k + " needs a value");
            String v = args[++i];
            switch (k) {
                case "--model" -> model = Path.of(v);
                case "--ids" -> ids = v;
                case "--text" -> text = v;
                case "--out" -> outFile = Path.of(v);
                case "--dtype" -> dtype = v;
                case "--device" -> device = v;
                default -> throw new UsageException("unknown option " + k);
            }
        }
        if (model == null) throw new UsageException("--model is required");
        if (outFile == null) throw new UsageException("--out is required");
        if ((ids == null) == (text == null)) throw new UsageException("give exactly one of --ids and --text");
        ScalarType dt;
        if (dtype.equals("f32")) dt = ScalarType.Float;
        else if (dtype.equals("bf16")) dt = ScalarType.BFloat16;
        else throw new UsageException("--dtype must be f32 or bf16, got '" + dtype + "'");
        long[] parsed = null;
        if (ids != null) {
            String[] parts = ids.split(",", -1);
            parsed = new long[parts.length];
            for (int i = 0; i < parts.length; i++) {
                try {
                    parsed[i] = Long.parseLong(parts[i].trim());
                } catch (NumberFormatException e) {
                    throw new UsageException("--ids must be comma-separated integers, got '" + parts[i] + "'");
                }
            }
        }
        return new Args(model, parsed, text, outFile, dt, device);
    }

    /** The first line of an error's message (libtorch messages carry a backtrace), with its type if it has none. */
    static String oneLine(Throwable e) {
        String m = e.getMessage();
        if (m == null || m.isBlank()) return e.getClass().getSimpleName();
        String first = m.strip().lines().findFirst().orElse(m).strip();
        return (e instanceof OutOfMemoryError ? "out of memory: " : "") + first;
    }

}
