package ai.aligndistil.bench;

import java.util.concurrent.TimeUnit;

import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Warmup;

import ai.aligndistil.kernel.Nvtx;

/**
 * The cost of one NVTX range from Java ({@link Nvtx}): {@code range} opens and closes one pre-declared range
 * (two FFM downcalls into libaligndistil_cuda, which are NVTX v3 no-ops when no tool is attached);
 * {@code rangeOff} is the same with {@code -Daligndistil.nvtx=false} (the JIT folds the calls away: the floor of
 * an empty benchmark). Run with {@code -prof gc}: both must allocate about 0 B/op. Under nsys the first number
 * grows by the tool's own recording cost.
 */
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.NANOSECONDS)
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
public class NvtxBench {
    static final Nvtx.Range R = Nvtx.range("bench/nvtx");

    @Benchmark
    @Fork(value = 1, jvmArgsAppend = {"--enable-native-access=ALL-UNNAMED", "-Xmx256m"})
    public boolean range() {
        try (Nvtx.Range _ = R.open()) {
            return Nvtx.enabled();
        }
    }

    @Benchmark
    @Fork(value = 1, jvmArgsAppend = {"--enable-native-access=ALL-UNNAMED", "-Xmx256m", "-Daligndistil.nvtx=false"})
    public boolean rangeOff() {
        try (Nvtx.Range _ = R.open()) {
            return Nvtx.enabled();
        }
    }
}
