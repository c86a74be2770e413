package ai.aligndistil.bench;

import java.util.concurrent.TimeUnit;

import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.annotations.Warmup;

import ai.aligndistil.kernel.Backend;
import ai.aligndistil.io.DType;
import ai.aligndistil.kernel.FusedDistillLoss;
import ai.aligndistil.kernel.LossConfig;
import ai.aligndistil.kernel.NativeCpu;
import ai.aligndistil.kernel.Variant;

/**
 * Suite 1: the fused loss, forward and gradient together, on host memory.
 * <ul>
 *   <li>{@code fused}: the native CPU kernel at {@code threads} threads;</li>
 *   <li>{@code libtorch}: the same loss composed from libtorch ops with autograd ({@link TorchLoss}), torch intra-op
 *       threads = {@code threads} (run the JVM with OMP_NUM_THREADS = OPENBLAS_NUM_THREADS = threads: benchmarks/cpu.sh
 *       does), with glibc's allocator as installed and tuned not to unmap large blocks ({@code malloc});</li>
 *   <li>{@code reference}: the float64 Java reference, small shapes only;</li>
 *   <li>{@code variant}: every teacher construction through the fused kernel at one size.</li>
 * </ul>
 * Every state checks its own output against the reference in its setup ({@link Verify}). Times are per call
 * (SampleTime: every call of these ms-scale operations is timed, and the report uses the median). The gradient dtype
 * is the input dtype (what autograd gives the libtorch baseline). The CUDA kernel is in {@link FusedLossCudaBench}.
 */
@BenchmarkMode(Mode.SampleTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
@Fork(value = 1, jvmArgsAppend = {"--enable-native-access=ALL-UNNAMED", "-Xms1g", "-Xmx3g", "-XX:+UseParallelGC",
        "-Djava.awt.headless=true"})
public class FusedLossBench {
    static final long SEED = 20250302L;

    /** Shape, dtype and threads of the host suites. */
    @State(Scope.Benchmark)
    public abstract static class Shape {
        @Param({"32000", "128256", "151936"})
        public int vocab;
        @Param({"64", "512"})
        public int tokens;
        @Param({"f32", "bf16"})
        public String dtype;

        BenchData data;

        DType dt() { return DType.parse(dtype); }

        void closeData() {
            if (data != null) data.close();
            data = null;
        }
    }

    @State(Scope.Benchmark)
    public static class Fused extends Shape {
        @Param({"1", "2"})
        public int threads;

        FusedDistillLoss.Batch batch;

        @Setup(Level.Trial)
        public void setup() {
            if (NativeCpu.threads() < threads)
                throw new IllegalStateException("the CPU library's pool has " + NativeCpu.threads() + " threads, wanted " + threads);
            LossConfig cfg = LossConfig.defaults(Variant.ALIGNDISTIL);
            data = new BenchData(tokens, vocab, dt(), dt(), SEED);
            batch = Verify.bind(FusedDistillLoss.create(cfg, Backend.CPU).newBatch(data.B, data.T, data.V), data, cfg).threads(threads);
            System.out.println("[bench] " + Verify.fused("fused cpu (" + NativeCpu.isa() + ", " + threads + " thread(s))", batch, data, cfg));
        }

        @TearDown(Level.Trial)
        public void tearDown() {
            if (batch != null) batch.close();
            closeData();
        }
    }

    /**
     * The glibc tunables that keep freed large blocks in the heap instead of handing them back to the kernel. With
     * glibc's defaults every libtorch tensor above 32 MiB is an mmap of its own, so each call of the baseline
     * page-faults its intermediates back in (about 140k faults per call at V=151936, 64 tokens, f32). Raising the
     * mmap and trim thresholds removes that for blocks that fit a secondary arena's heap (64 MiB); arena_max=1 puts
     * the benchmark thread on the main (brk) arena so the 311 MB tensors of 512 tokens are reused too (measured:
     * 3.7 s -> 1.8 s per call at V=151936, 512 tokens, f32). This is what a tuned deployment would do.
     */
    public static final String NO_MMAP_TUNABLES = "glibc.malloc.mmap_threshold=4294967295:glibc.malloc.trim_threshold=4294967295:glibc.malloc.arena_max=1";

    @State(Scope.Benchmark)
    public static class Torch extends Shape {
        @Param({"1", "2"})
        public int threads;
        /**
         * The C allocator under libtorch: {@code default} (glibc as installed) or {@code no-mmap}
         * ({@link #NO_MMAP_TUNABLES}). JMH cannot set a fork's environment, so the script runs each value with the
         * matching GLIBC_TUNABLES and the setup refuses a mismatch.
         */
        @Param({"default", "no-mmap"})
        public String malloc;

        TorchLoss loss;

        @Setup(Level.Trial)
        public void setup() {
            String tun = System.getenv("GLIBC_TUNABLES");
            boolean tuned = tun != null && tun.contains("glibc.malloc.mmap_threshold");
            if (malloc.equals("no-mmap") != tuned)
                throw new IllegalStateException("malloc=" + malloc + " needs GLIBC_TUNABLES " + (tuned ? "unset" : "=" + NO_MMAP_TUNABLES) + " (is: " + tun + ")");
            LossConfig cfg = LossConfig.defaults(Variant.ALIGNDISTIL);
            data = new BenchData(tokens, vocab, dt(), dt(), SEED);
            double oracle = Verify.oracleLoss(data, cfg);            // before torch loads: the fused CPU kernel, checked
            loss = new TorchLoss(data, cfg, threads);
            data.poisonGrad();
            double l = loss.run(data.grad);
            System.out.println("[bench] " + Verify.other("libtorch (" + threads + " thread(s), malloc " + malloc + ", OMP_NUM_THREADS=" + System.getenv("OMP_NUM_THREADS")
                    + ", OPENBLAS_NUM_THREADS=" + System.getenv("OPENBLAS_NUM_THREADS") + ")", data, cfg, data.grad, data.gradType, l, oracle));
        }

        @TearDown(Level.Trial)
        public void tearDown() {
            closeData();
        }
    }

    /** The float64 Java reference: small shapes only (it is ~100x slower than the kernel). */
    @State(Scope.Benchmark)
    public static class Ref {
        @Param({"32000"})
        public int vocab;
        @Param({"64"})
        public int tokens;
        @Param({"f32", "bf16"})
        public String dtype;

        BenchData data;
        FusedDistillLoss.Batch batch;

        @Setup(Level.Trial)
        public void setup() {
            LossConfig cfg = LossConfig.defaults(Variant.ALIGNDISTIL);
            DType dt = DType.parse(dtype);
            data = new BenchData(tokens, vocab, dt, dt, SEED);
            batch = Verify.bind(FusedDistillLoss.create(cfg, Backend.REFERENCE).newBatch(data.B, data.T, data.V), data, cfg);
            System.out.println("[bench] " + Verify.fused("java reference", batch, data, cfg));
        }

        @TearDown(Level.Trial)
        public void tearDown() {
            if (batch != null) batch.close();
            if (data != null) data.close();
        }
    }

    /** Every variant through the fused kernel at one size (the real Qwen2.5 vocabulary, 64 tokens, f32). */
    @State(Scope.Benchmark)
    public static class Var {
        @Param({"aligndistil", "contrast", "adaptive", "theorem1", "gkd"})
        public String variant;
        @Param({"151936"})
        public int vocab;
        @Param({"64"})
        public int tokens;
        @Param({"f32"})
        public String dtype;
        @Param({"1"})
        public int threads;

        BenchData data;
        FusedDistillLoss.Batch batch;

        @Setup(Level.Trial)
        public void setup() {
            LossConfig cfg = LossConfig.defaults(Variant.parse(variant));
            DType dt = DType.parse(dtype);
            data = new BenchData(tokens, vocab, dt, dt, SEED);
            batch = Verify.bind(FusedDistillLoss.create(cfg, Backend.CPU).newBatch(data.B, data.T, data.V), data, cfg).threads(threads);
            System.out.println("[bench] " + Verify.fused("fused cpu " + variant + " (" + NativeCpu.isa() + ", " + threads + " thread(s))", batch, data, cfg));
        }

        @TearDown(Level.Trial)
        public void tearDown() {
            if (batch != null) batch.close();
            if (data != null) data.close();
        }
    }

    @Benchmark
    public double fused(Fused s) {
        return s.batch.run();
    }

    @Benchmark
    public double libtorch(Torch s) {
        return s.loss.run();
    }

    @Benchmark
    public double reference(Ref s) {
        return s.batch.run();
    }

    @Benchmark
    public double variant(Var s) {
        return s.batch.run();
    }
}
