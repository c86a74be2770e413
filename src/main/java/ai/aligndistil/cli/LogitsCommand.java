package ai.aligndistil.cli;

import ai.aligndistil.io.DType;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.Callable;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.InferenceMode;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;

import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;
import picocli.CommandLine.Model.CommandSpec;

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
 * written atomically, so a failure leaves no file. Exit codes: 0 success, 2 usage error (at most two lines),
 * 1 any other failure (one line).
 */
@SuppressWarnings("try")
@Command(name = "logits", sortOptions = false,
        description = "One forward pass of a Hugging Face model folder; the logits [T, V] as float32 to a safetensors file "
                + "(--text is tokenised with the folder's tokenizer.json, no special tokens, no chat template).")
final class LogitsCommand implements Callable<Integer> {
    @Option(names = "--model", paramLabel = "DIR",
            description = "Hugging Face model folder (config.json, model.safetensors; tokenizer.json for --text); required.")
    Path model;

    @Option(names = "--ids", paramLabel = "ID,ID,...", split = ",",
            description = "Input token ids, comma-separated (exactly one of --ids and --text).")
    long[] ids;

    @Option(names = "--text", paramLabel = "TEXT", description = "Input text, tokenised with the folder's tokenizer.json (exactly one of --ids and --text).")
    String text;

    @Option(names = "--out", paramLabel = "FILE",
            description = "Output safetensors file (tensor 'logits', float32 [T, V]); written atomically, only on success; required.")
    Path out;

    @Option(names = "--dtype", paramLabel = "f32|bf16", defaultValue = "f32",
            description = "Dtype the model runs in, whatever the checkpoint's: f32 or bf16 (default: ${DEFAULT-VALUE}); the output is float32.")
    String dtype;

    @Option(names = "--device", paramLabel = "auto|cpu|cuda|cuda:N", defaultValue = "auto",
            description = "Where the model runs: auto (CUDA when it answers, else the CPU; logged), cpu, cuda or cuda:N (default: ${DEFAULT-VALUE}).")
    String device;

    @Option(names = {"-h", "--help"}, usageHelp = true, description = "Show this help and exit.")
    boolean help;

    @Spec CommandSpec spec;

    private final PrintStream stdout, stderr;

    LogitsCommand(PrintStream stdout, PrintStream stderr) {
        this.stdout = stdout;
        this.stderr = stderr;
    }

    /** Runs {@code aligndistil logits ARGS}; returns the exit code (0 ok, 1 failure, 2 usage error). */
    public static int run(String[] args, PrintStream out, PrintStream err) {
        String[] all = new String[args.length + 1];
        all[0] = "logits";
        System.arraycopy(args, 0, all, 1, args.length);
        return Main.run(all, out, err);
    }

    @Override
    public Integer call() {
        // checked here rather than as picocli's required options, so that an unknown option is the error reported first
        if (model == null) throw new CommandLine.ParameterException(spec.commandLine(), "missing --model");
        if (out == null) throw new CommandLine.ParameterException(spec.commandLine(), "missing --out");
        if ((ids == null) == (text == null)) throw new CommandLine.ParameterException(spec.commandLine(), "give exactly one of --ids and --text");
        ScalarType dt = switch (dtype) {
            case "f32" -> ScalarType.Float;
            case "bf16" -> ScalarType.BFloat16;
            default -> throw new CommandLine.ParameterException(spec.commandLine(), "--dtype must be f32 or bf16, got '" + dtype + "'");
        };
        Devices.Choice dev;
        try {
            dev = Devices.resolve(device); // before any work: a device that cannot be used is a usage error
        } catch (Devices.UnavailableException e) {
            stderr.println("aligndistil logits: " + e.getMessage()); // complete in one line: no pointer to --help
            return Main.USAGE;
        }
        try {
            ModelConfig config = ModelConfig.read(model);
            HfCheckpoint.inspect(model);           // validates names and shapes before any native work
            long[] tokens = ids;
            if (tokens == null) {
                Path tokFile = model.resolve("tokenizer.json");
                if (!Files.isRegularFile(tokFile)) throw new IllegalArgumentException(model + " has no tokenizer.json; use --ids");
                try (HfTokenizer tok = HfTokenizer.load(tokFile)) {
                    tokens = tok.encode(text);
                }
                if (tokens.length == 0) throw new IllegalArgumentException("--text tokenises to no tokens");
            }
            for (long id : tokens)
                if (id < 0 || id >= config.vocabSize())
                    throw new IllegalArgumentException("token id " + id + " is outside the vocabulary [0, " + config.vocabSize() + ")");
            TorchRuntime.init();
            CausalLM m = HfCheckpoint.load(model, dt).to(dev);
            int t = tokens.length, v = config.vocabSize();
            try (PointerScope s = new PointerScope(); InferenceMode im = new InferenceMode()) {
                Tensor logits = m.forward(Tensors.fromLongs(tokens, 1, t)).to(ScalarType.Float).contiguous();
                new Safetensors.Writer()
                        .metadata("format", "pt")
                        .add("logits", DType.F32, new long[] {t, v}, Tensors.segment(logits))
                        .write(out);
            }
            stdout.println("logits [" + t + ", " + v + "] (" + Tensors.hfName(dt) + ") -> " + out);
            return 0;
        } catch (Throwable e) {
            stderr.println("aligndistil logits: " + oneLine(e));
            return 1;
        }
    }

    /** The first line of an error's message (libtorch messages carry a backtrace), with its type if it has none. */
    static String oneLine(Throwable e) {
        String m = e.getMessage();
        if (m == null || m.isBlank()) return e.getClass().getSimpleName();
        String first = m.strip().lines().findFirst().orElse(m).strip();
        return (e instanceof OutOfMemoryError ? "out of memory: " : "") + first;
    }

}
