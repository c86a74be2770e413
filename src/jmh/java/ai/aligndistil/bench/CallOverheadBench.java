package ai.aligndistil.bench;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.SymbolLookup;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;
import java.nio.file.Path;
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
 * Suite 2: the cost of crossing into native code. A vocabulary of 8 makes the kernel's own work tiny, so
 * {@code fusedTiny} is the per-call host overhead (Java validation, filling the native argument block, the FFM
 * downcall, the C driver's checks and mask scan) plus that small kernel: an upper bound on the overhead.
 * <ul>
 *   <li>{@code threads = 1}: the batch asks for one thread explicitly (what the other suites do);</li>
 *   <li>{@code threads = 0}: the batch default, "the library's pool size" (what a user gets without calling
 *       {@code Batch.threads}).</li>
 * </ul>
 * {@code downcallAbiVersion} is a bare FFM downcall into the same library ({@code ad_abi_version}, returns a
 * constant): the floor of any call. {@code downcallGetThreads} is {@code NativeCpu.threads()}
 * ({@code ad_cpu_get_threads}), which shows what the library's "default thread count" costs per query.
 * Run with {@code -prof gc}: {@code gc.alloc.rate.norm} must be about 0 B/op on the hot path.
 */
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.NANOSECONDS)
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
@Fork(value = 2, jvmArgsAppend = {"--enable-native-access=ALL-UNNAMED", "-Xms256m", "-Xmx256m", "-XX:+UseParallelGC"})
public class CallOverheadBench {

    @State(Scope.Thread)
    public static class Tiny {
        @Param({"8"})
        public int vocab;
        @Param({"1", "16"})
        public int tokens;
        @Param({"f32"})
        public String dtype;
        @Param({"1", "0"})
        public int threads;

        BenchData data;
        FusedDistillLoss.Batch batch;

        @Setup(Level.Trial)
        public void setup() {
            LossConfig cfg = LossConfig.defaults(Variant.ALIGNDISTIL);
            DType dt = DType.parse(dtype);
            data = new BenchData(tokens, vocab, dt, dt, FusedLossBench.SEED);
            batch = Verify.bind(FusedDistillLoss.create(cfg, Backend.CPU).newBatch(data.B, data.T, data.V), data, cfg).threads(threads);
            System.out.println("[bench] " + Verify.fused("fused cpu tiny (" + NativeCpu.isa() + ", threads " + threads + ")", batch, data, cfg));
        }

        @TearDown(Level.Trial)
        public void tearDown() {
            if (batch != null) batch.close();
            if (data != null) data.close();
        }
    }

    @Benchmark
    public double fusedTiny(Tiny s) {
        return s.batch.run();
    }

    /** A downcall handle of our own to {@code int32_t ad_abi_version(void)} in the CPU library the kernel uses. */
    @State(Scope.Benchmark)
    public static class Bare {
        MethodHandle abiVersion;

        @Setup(Level.Trial)
        public void setup() {
            String lib = NativeCpu.libraryPath();
            if (lib == null) throw new IllegalStateException("the CPU library is not loaded: " + NativeCpu.problem());
            SymbolLookup l = SymbolLookup.libraryLookup(Path.of(lib), Arena.global());
            abiVersion = Linker.nativeLinker().downcallHandle(l.find("ad_abi_version").orElseThrow(), FunctionDescriptor.of(ValueLayout.JAVA_INT));
        }
    }

    @Benchmark
    public int downcallAbiVersion(Bare b) throws Throwable {
        return (int) b.abiVersion.invokeExact();
    }

    @Benchmark
    public int downcallGetThreads() {
        return NativeCpu.threads();
    }
}
