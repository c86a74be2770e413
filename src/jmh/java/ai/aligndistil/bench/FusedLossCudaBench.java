package ai.aligndistil.bench;

import java.lang.foreign.MemorySegment;
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
import ai.aligndistil.kernel.NativeCuda;
import ai.aligndistil.kernel.Variant;

/**
 * Suite 1, GPU part: the CUDA kernel on device-resident inputs of the same shapes as {@link FusedLossBench}, timed on
 * the host as "launch + synchronize" (what a trainer thread waits for). Device-side timing with CUDA events and cold
 * L2 is {@link CudaEventBench}. Needs a GPU; benchmarks/cpu.sh includes it only when one answers.
 */
@BenchmarkMode(Mode.SampleTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
@Warmup(iterations = 2, time = 1)
@Measurement(iterations = 5, time = 1)
@Fork(value = 1, jvmArgsAppend = {"--enable-native-access=ALL-UNNAMED", "-Xms1g", "-Xmx3g", "-XX:+UseParallelGC"})
public class FusedLossCudaBench {

    @State(Scope.Benchmark)
    public static class Dev {
        @Param({"32000", "128256", "151936"})
        public int vocab;
        @Param({"64", "512"})
        public int tokens;
        @Param({"f32", "bf16"})
        public String dtype;

        BenchData data;
        MemorySegment dS, dD, dR, dM, dG;
        long stream;
        FusedDistillLoss.Batch batch;

        @Setup(Level.Trial)
        public void setup() {
            Gpu.require();
            LossConfig cfg = LossConfig.defaults(Variant.ALIGNDISTIL);
            DType dt = DType.parse(dtype);
            data = new BenchData(tokens, vocab, dt, dt, FusedLossBench.SEED);
            double oracle = Verify.oracleLoss(data, cfg);
            dS = Gpu.upload(data.student);
            dD = Gpu.upload(data.dpo);
            dR = Gpu.upload(data.second);
            dM = Gpu.upload(data.mask);
            dG = NativeCuda.malloc(data.grad.byteSize());
            stream = NativeCuda.streamCreate();
            batch = FusedDistillLoss.create(cfg, Backend.CUDA).newBatch(data.B, data.T, data.V)
                    .student(dS, dt).dpo(dD, dt).second(dR, dt).mask(dM).grad(dG, dt);
            batch.runOnDevice(stream);
            double l = batch.synchronize(stream);
            data.poisonGrad();
            NativeCuda.copyToHost(data.grad, dG, data.grad.byteSize(), stream);
            System.out.println("[bench] " + Verify.other("fused cuda on " + Gpu.describe(), data, cfg, data.grad, data.gradType, l, oracle));
        }

        @TearDown(Level.Trial)
        public void tearDown() {
            if (batch != null) batch.close();
            Gpu.free(dS, dD, dR, dM, dG);
            if (stream != 0) NativeCuda.streamDestroy(stream);
            if (data != null) data.close();
        }
    }

    @Benchmark
    public double cuda(Dev s) {
        s.batch.runOnDevice(s.stream);
        return s.batch.synchronize(s.stream);
    }
}
