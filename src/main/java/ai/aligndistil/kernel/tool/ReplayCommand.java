package ai.aligndistil.kernel.tool;

import ai.aligndistil.kernel.Backend;
import ai.aligndistil.kernel.Backends;
import ai.aligndistil.kernel.LossConfig;
import ai.aligndistil.kernel.Variant;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.ParameterException;
import picocli.CommandLine.Spec;

import java.nio.file.Path;
import java.util.concurrent.Callable;

/**
 * {@code replay}: the engine's loss and gradient on a batch dumped from another trainer (see {@link Replay} for
 * the tensors in and out). The same command in {@code ./aligndistil replay} and {@code java -jar
 * aligndistil-kernel.jar replay}: register it with {@code new CommandLine(new ReplayCommand())} or as a
 * subcommand. Usage errors (a bad or missing option, an unavailable backend) exit 2; a file that cannot be
 * replayed exits 1 with one line on stderr naming the file and the problem, and no output file.
 */
@Command(name = "replay", mixinStandardHelpOptions = true, versionProvider = KernelMain.Version.class, sortOptions = false,
        description = {"Loss and gradient of a batch dumped to safetensors, written to safetensors.",
                "Inputs: student_logits, dpo_logits, reverse_logits (aligndistil, contrast) or reference_logits (adaptive, theorem1)"
                        + " [B,T,V] f32/bf16/f16; mask [B,T] bool/u8/i32/i64/f32 (nonzero = selected row, no shift).",
                "Outputs: loss (f64), token_loss [B,T], weight [B,T], metrics [B,T,3], grad_student_logits [B,T,V] (f32);"
                        + " written atomically, only on success."})
public final class ReplayCommand implements Callable<Integer> {
    @Spec
    CommandSpec spec;

    @Option(names = "--in", required = true, paramLabel = "BATCH", description = "the batch to replay (safetensors file)")
    Path in;

    @Option(names = "--out", required = true, paramLabel = "RESULT", description = "where to write the result (safetensors file; replaced atomically)")
    Path out;

    @Option(names = "--variant", paramLabel = "NAME", defaultValue = "aligndistil", converter = Converters.VariantConverter.class,
            description = "aligndistil | contrast | adaptive | theorem1 | gkd (default: ${DEFAULT-VALUE})")
    Variant variant;

    @Option(names = "--beta", paramLabel = "B", defaultValue = "" + LossConfig.DEFAULT_BETA,
            description = "beta of the extrapolated teacher, > 0 (default: ${DEFAULT-VALUE})")
    double beta;

    @Option(names = "--beta2", paramLabel = "B2", defaultValue = "" + LossConfig.DEFAULT_BETA2,
            description = "scale of the adaptive weight alpha_t = beta2 * TVD + epsilon, > 0 (default: ${DEFAULT-VALUE})")
    double beta2;

    @Option(names = "--epsilon", paramLabel = "E", defaultValue = "" + LossConfig.DEFAULT_EPSILON,
            description = "floor of the adaptive weight, > 0 (default: ${DEFAULT-VALUE})")
    double epsilon;

    @Option(names = "--temperature", paramLabel = "T", defaultValue = "1",
            description = "teacher temperature, > 0; gkd ignores it (default: ${DEFAULT-VALUE})")
    double temperature;

    @Option(names = "--student-temperature", paramLabel = "TS", defaultValue = "1",
            description = "student temperature, > 0 (default: ${DEFAULT-VALUE})")
    double studentTemperature;

    @Option(names = "--length-norm", negatable = true, defaultValue = "true", fallbackValue = "true",
            description = "divide each sequence's loss by its selected rows; --no-length-norm sums them (default: on)")
    boolean lengthNorm;

    @Option(names = "--sequence-divisor", paramLabel = "N", defaultValue = "0",
            description = "divide by N sequences instead of the non-empty ones; 0 = the non-empty ones (default: ${DEFAULT-VALUE})")
    double sequenceDivisor;

    @Option(names = "--backend", paramLabel = "NAME", converter = Converters.BackendConverter.class,
            description = "reference | cpu | cuda (default: cpu when its native library loads, else reference;"
                    + " -Daligndistil.backend sets it too)")
    Backend backend;

    @Override
    public Integer call() {
        LossConfig cfg;
        try {
            cfg = new LossConfig(variant, beta, beta2, epsilon, temperature, studentTemperature, lengthNorm);
        } catch (IllegalArgumentException e) {
            throw new ParameterException(spec.commandLine(), e.getMessage());
        }
        if (!(sequenceDivisor >= 0) || Double.isInfinite(sequenceDivisor))
            throw new ParameterException(spec.commandLine(), "--sequence-divisor must be finite and >= 0");
        Backend be;
        try {
            be = backend != null ? backend : Backends.hostDefault();
        } catch (IllegalArgumentException | IllegalStateException e) {
            throw new ParameterException(spec.commandLine(), e.getMessage());
        }
        Replay.Result r;
        try {
            r = Replay.run(in, out, cfg, be, sequenceDivisor);
        } catch (Replay.ReplayException e) {
            if (e.usage()) throw new ParameterException(spec.commandLine(), e.getMessage());
            return KernelMain.fail(spec, e.getMessage());
        }
        spec.commandLine().getOut().printf("replay: loss %.9g over %d selected rows (B=%d, T=%d, V=%d), variant %s, backend %s; wrote %s%n",
                r.loss(), r.selectedRows(), r.batch(), r.seq(), r.vocab(), cfg.variant(), r.backend(), out);
        spec.commandLine().getOut().flush();
        return 0;
    }
}
