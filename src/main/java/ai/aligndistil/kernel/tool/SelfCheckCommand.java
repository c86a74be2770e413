package ai.aligndistil.kernel.tool;

import ai.aligndistil.io.DType;
import ai.aligndistil.io.Safetensors;
import ai.aligndistil.kernel.Backend;
import ai.aligndistil.kernel.Backends;
import ai.aligndistil.kernel.LossConfig;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.ParameterException;
import picocli.CommandLine.Spec;

import java.io.IOException;
import java.io.PrintWriter;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Comparator;
import java.util.SplittableRandom;
import java.util.concurrent.Callable;
import java.util.stream.Stream;

/**
 * {@code self-check} (also {@code ./aligndistil demo --replay}, its old name): writes a built-in example batch
 * (seeded: 2 sequences x 48 positions, V = 32000, f32, a prompt part masked out, one sequence shorter), replays
 * it with the chosen backend and with the double-precision reference, prints the loss, weights and the largest
 * disagreement, and exits 1 when the two disagree by more than the fused-loss acceptance bounds (loss 1e-5
 * relative, gradient 1e-4 relative L2).
 */
@Command(name = "self-check", mixinStandardHelpOptions = true, versionProvider = KernelMain.Version.class, sortOptions = false,
        description = {"Replays a built-in example batch (B=2, T=48, V=32000, f32, variant aligndistil, beta 0.1, beta2 10)"
                + " on a backend and checks it against the double-precision reference.",
                "Exit 0 when the loss agrees within 1e-5 relative and the gradient within 1e-4 relative L2, else 1."})
public final class SelfCheckCommand implements Callable<Integer> {
    static final int B = 2, T = 48, V = 32000;
    static final double LOSS_BOUND = 1e-5, GRAD_BOUND = 1e-4;

    @Spec
    CommandSpec spec;

    @Option(names = "--backend", paramLabel = "NAME", converter = Converters.BackendConverter.class,
            description = "the backend to check: reference | cpu | cuda (default: cpu when its native library loads, else reference)")
    Backend backend;

    @Option(names = "--seed", paramLabel = "N", defaultValue = "20261128", description = "seed of the example batch (default: ${DEFAULT-VALUE})")
    long seed;

    @Override
    public Integer call() {
        Backend be;
        try {
            be = backend != null ? backend : Backends.hostDefault();
            Backends.require(be);
        } catch (IllegalArgumentException | IllegalStateException e) {
            throw new ParameterException(spec.commandLine(), e.getMessage());
        }
        PrintWriter out = spec.commandLine().getOut();
        out.println("aligndistil self-check: replays a built-in example batch");
        out.println("(B=" + B + ", T=" + T + ", V=" + V + ", f32, variant aligndistil, beta 0.1, beta2 10) on backend " + be
                + " and checks it against the reference.");
        out.flush();
        Path dir;
        try {
            dir = Files.createTempDirectory("aligndistil-self-check");
        } catch (IOException e) {
            return KernelMain.fail(spec, "cannot create a temporary folder: " + e.getMessage());
        }
        try {
            Path in = dir.resolve("batch.safetensors");
            writeExampleBatch(in, seed);
            LossConfig cfg = LossConfig.defaults();
            long t0 = System.nanoTime();
            Replay.Result fast = Replay.run(in, dir.resolve("fast.safetensors"), cfg, be, 0);
            long t1 = System.nanoTime();
            Replay.Result ref = Replay.run(in, dir.resolve("ref.safetensors"), cfg, Backend.REFERENCE, 0);
            long t2 = System.nanoTime();
            try (Safetensors.Reader a = Safetensors.open(dir.resolve("fast.safetensors"));
                 Safetensors.Reader r = Safetensors.open(dir.resolve("ref.safetensors"))) {
                float[] w = a.readFloats("weight"), tl = a.readFloats("token_loss");
                float[] ga = a.readFloats("grad_student_logits"), gr = r.readFloats("grad_student_logits");
                double num = 0, den = 0;
                for (int i = 0; i < ga.length; i++) {
                    num += (ga[i] - gr[i]) * (double) (ga[i] - gr[i]);
                    den += gr[i] * (double) gr[i];
                }
                double wMin = Double.MAX_VALUE, wMax = 0, wSum = 0;
                int n = 0;
                for (float x : w) {
                    if (x == 0) continue;
                    wMin = Math.min(wMin, x);
                    wMax = Math.max(wMax, x);
                    wSum += x;
                    n++;
                }
                double lossRel = Math.abs(fast.loss() - ref.loss()) / Math.max(1e-300, Math.abs(ref.loss()));
                double gradRel = Math.sqrt(num / Math.max(den, 1e-300));
                out.printf("loss            %s: %.9f   reference: %.9f   (relative difference %.2e)%n", be, fast.loss(), ref.loss(), lossRel);
                out.printf("selected rows   %d of %d%n", fast.selectedRows(), B * T);
                out.printf("weight alpha_t  min %.4f  mean %.4f  max %.4f (beta2 * TVD + 1e-3; the coefficient is beta/alpha_t)%n", wMin, wSum / n, wMax);
                out.printf("token loss      first selected rows: %.5f %.5f %.5f%n", firstNonZero(tl, 0), firstNonZero(tl, 1), firstNonZero(tl, 2));
                out.printf("gradient        relative L2 difference to the reference: %.2e%n", gradRel);
                out.printf("time            %s %.1f ms, reference %.1f ms (each including safetensors I/O)%n", be, (t1 - t0) / 1e6, (t2 - t1) / 1e6);
                boolean ok = lossRel <= LOSS_BOUND && gradRel <= GRAD_BOUND;
                out.println(ok ? "self-check: ok (loss within " + LOSS_BOUND + " relative, gradient within " + GRAD_BOUND + " relative L2)"
                        : "self-check: FAILED");
                out.flush();
                if (!ok) return KernelMain.fail(spec, "backend " + be + " disagrees with the reference: loss relative difference "
                        + String.format("%.2e", lossRel) + " (bound " + LOSS_BOUND + "), gradient relative L2 " + String.format("%.2e", gradRel)
                        + " (bound " + GRAD_BOUND + ")");
            }
            return 0;
        } catch (Replay.ReplayException e) {
            return KernelMain.fail(spec, e.getMessage());
        } catch (IOException e) {
            return KernelMain.fail(spec, e.getMessage());
        } finally {
            try (Stream<Path> s = Files.walk(dir)) {
                s.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
            } catch (IOException ignored) {
                // best effort: a temporary folder
            }
        }
    }

    private static float firstNonZero(float[] a, int k) {
        for (float f : a) if (f != 0 && k-- == 0) return f;
        return 0;
    }

    /**
     * Logits that look like a language model's: a shared Zipf-like prior plus per-model noise; the reverse DPO
     * model disagrees with the DPO model on a few "reward-relevant" columns per row.
     */
    static void writeExampleBatch(Path file, long seed) throws IOException {
        SplittableRandom rnd = new SplittableRandom(seed);
        float[] s = new float[B * T * V], d = new float[B * T * V], r = new float[B * T * V];
        for (int row = 0; row < B * T; row++) {
            for (int v = 0; v < V; v++) {
                double prior = -1.2 * Math.log(1 + v) + 2 * rnd.nextGaussian();
                int i = row * V + v;
                d[i] = (float) (prior + 0.3 * rnd.nextGaussian());
                r[i] = (float) (prior + 0.3 * rnd.nextGaussian());
                s[i] = (float) (prior + 0.5 * rnd.nextGaussian());
            }
            for (int k = 0; k < 8; k++) {
                int v = rnd.nextInt(64);
                d[row * V + v] += 3;
                r[row * V + v] -= 3;
            }
        }
        byte[] mask = new byte[B * T];
        for (int t = 12; t < T; t++) mask[t] = 1;          // sequence 0: prompt 12, response 36
        for (int t = 20; t < T - 8; t++) mask[T + t] = 1;  // sequence 1: prompt 20, response 20, right padding 8
        new Safetensors.Writer()
                .addFloats("student_logits", new long[] {B, T, V}, s)
                .addFloats("dpo_logits", new long[] {B, T, V}, d)
                .addFloats("reverse_logits", new long[] {B, T, V}, r)
                .add("mask", DType.U8, new long[] {B, T}, MemorySegment.ofArray(mask))
                .write(file);
    }
}
