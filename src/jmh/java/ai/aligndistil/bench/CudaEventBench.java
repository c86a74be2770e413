package ai.aligndistil.bench;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.concurrent.TimeUnit;

import org.openjdk.jmh.annotations.AuxCounters;
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

import ai.aligndistil.io.Json;
import ai.aligndistil.kernel.Backend;
import ai.aligndistil.io.DType;
import ai.aligndistil.kernel.FusedDistillLoss;
import ai.aligndistil.kernel.LossConfig;
import ai.aligndistil.kernel.NativeCuda;
import ai.aligndistil.kernel.Variant;

/**
 * Suite 3: the CUDA kernel timed on the device with CUDA events, through the project's own library (NativeCuda), and
 * a device-to-device copy measured in the same run as the bandwidth ceiling.
 *
 * <p>Cold L2: the inputs and gradients are replicated into {@code sets} device copies, enough that the sets together
 * are at least 4x the L2 (and never fewer than 2); one benchmark call launches the kernel once on every set, in turn,
 * between two events on one stream, so no launch finds its rows in L2 from the previous one and the host's launch
 * gaps are hidden behind the running kernels (the first launch's gap, a few microseconds, is included). The copy does
 * the same over 2 buffer pairs of {@code copyMiB} each.
 *
 * <p>Results: the JMH primary metric is host time per call (all launches + synchronize); the device time per launch
 * is {@code deviceUs / launches} from the auxiliary counters. With {@code -Daligndistil.bench.events=FILE} each trial
 * also appends one JSON line with the median, p10 and p90 of the per-launch device times, which benchmarks/render.sh
 * folds into the table. Effective bandwidth: kernel = (3 input rows read + 1 gradient row written) / time; copy =
 * 2 x bytes / time.
 */
@BenchmarkMode(Mode.SampleTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
@Warmup(iterations = 2, time = 1)
@Measurement(iterations = 5, time = 1)
@Fork(value = 1, jvmArgsAppend = {"--enable-native-access=ALL-UNNAMED", "-Xms1g", "-Xmx4g", "-XX:+UseParallelGC"})
public class CudaEventBench {

    /** Device time, summed per iteration; the report divides deviceUs by launches. */
    @AuxCounters(AuxCounters.Type.EVENTS)
    @State(Scope.Thread)
    public static class DeviceTime {
        public double deviceUs;
        public long launches;

        @Setup(Level.Iteration)
        public void reset() {
            deviceUs = 0;
            launches = 0;
        }
    }

    /** Per-launch device times of one trial, for the median written at tear-down. */
    abstract static class Samples {
        float[] perLaunchUs = new float[1 << 16];
        int n;
        long ev0, ev1, stream;

        void record(float us) {
            if (n == perLaunchUs.length) perLaunchUs = Arrays.copyOf(perLaunchUs, n * 2);
            perLaunchUs[n++] = us;
        }

        void events() {
            stream = NativeCuda.streamCreate();
            ev0 = NativeCuda.eventCreate();
            ev1 = NativeCuda.eventCreate();
        }

        void closeEvents() {
            if (ev0 != 0) NativeCuda.eventDestroy(ev0);
            if (ev1 != 0) NativeCuda.eventDestroy(ev1);
            if (stream != 0) NativeCuda.streamDestroy(stream);
        }

        void writeSummary(Map<String, Object> row) {
            float[] s = Arrays.copyOf(perLaunchUs, n);
            Arrays.sort(s);
            if (n > 0) {
                row.put("medianUs", (double) s[n / 2]);
                row.put("p10Us", (double) s[n / 10]);
                row.put("p90Us", (double) s[Math.min(n - 1, (n * 9) / 10)]);
            }
            row.put("samples", (long) n);
            row.put("device", Gpu.describe());
            String line = Json.write(row);
            System.out.println("[bench] device time " + line);
            String out = System.getProperty("aligndistil.bench.events");
            if (out == null || out.isBlank()) return;
            try {
                Files.writeString(Path.of(out), line + "\n", StandardCharsets.UTF_8, StandardOpenOption.CREATE, StandardOpenOption.APPEND);
            } catch (IOException e) {
                throw new IllegalStateException("cannot append to " + out + ": " + e.getMessage(), e);
            }
        }
    }

    @State(Scope.Benchmark)
    public static class Kernel extends Samples {
        @Param({"32000", "151936"})
        public int vocab;
        @Param({"4096"})
        public int tokens;
        @Param({"bf16", "f32"})
        public String dtype;
        /** The CUDA row kernel setting (NativeCuda.setKernel): auto | multipass | cluster. Default auto (= the library's
         *  choice, multipass unless built with AD_CUDA_CLUSTER_AUTO); compare both with -p rowKernel=multipass,cluster. */
        @Param({"auto"})
        public String rowKernel;

        BenchData data;
        int sets, next;
        MemorySegment[] dS, dD, dR, dG;
        MemorySegment dM;
        FusedDistillLoss.Batch[] batches;
        long setBytes;

        @Setup(Level.Trial)
        public void setup() {
            Gpu.require();
            LossConfig cfg = LossConfig.defaults(Variant.ALIGNDISTIL);
            DType dt = DType.parse(dtype);
            data = new BenchData(tokens, vocab, dt, dt, FusedLossBench.SEED);
            double oracle = Verify.oracleLoss(data, cfg);
            setBytes = 3 * data.student.byteSize() + data.grad.byteSize();
            long l2 = Gpu.l2Bytes();
            long want = Math.max(2, Math.min(64, (4 * l2 + setBytes - 1) / setBytes));
            long fit = (long) (0.6 * Gpu.globalBytes()) / setBytes;
            sets = (int) Math.min(want, fit);
            if (sets < 2) throw new IllegalStateException("two input sets of " + setBytes + " bytes do not fit in 60% of device memory");
            dS = new MemorySegment[sets];
            dD = new MemorySegment[sets];
            dR = new MemorySegment[sets];
            dG = new MemorySegment[sets];
            batches = new FusedDistillLoss.Batch[sets];
            dM = Gpu.upload(data.mask);
            events();
            NativeCuda.setKernel(rowKernel);
            FusedDistillLoss op = FusedDistillLoss.create(cfg, Backend.CUDA);
            for (int i = 0; i < sets; i++) {
                dS[i] = Gpu.upload(data.student);
                dD[i] = Gpu.upload(data.dpo);
                dR[i] = Gpu.upload(data.second);
                dG[i] = NativeCuda.malloc(data.grad.byteSize());
                batches[i] = op.newBatch(data.B, data.T, data.V).student(dS[i], dt).dpo(dD[i], dt).second(dR[i], dt).mask(dM).grad(dG[i], dt);
            }
            for (int i : new int[] {0, sets - 1}) {
                batches[i].runOnDevice(stream);
                double l = batches[i].synchronize(stream);
                data.poisonGrad();
                NativeCuda.copyToHost(data.grad, dG[i], data.grad.byteSize(), stream);
                System.out.println("[bench] set " + i + "/" + sets + ": " + Verify.other("fused cuda on " + Gpu.describe(), data, cfg, data.grad, data.gradType, l, oracle));
            }
        }

        @TearDown(Level.Trial)
        public void tearDown() {
            Map<String, Object> row = new LinkedHashMap<>();
            row.put("benchmark", "kernel");
            row.put("vocab", (long) vocab);
            row.put("tokens", (long) tokens);
            row.put("dtype", dtype);
            row.put("rowKernel", rowKernel);
            row.put("sets", (long) sets);
            row.put("trafficBytes", setBytes);
            writeSummary(row);
            for (FusedDistillLoss.Batch b : batches) if (b != null) b.close();
            for (int i = 0; i < sets; i++) Gpu.free(dS[i], dD[i], dR[i], dG[i]);
            Gpu.free(dM);
            closeEvents();
            data.close();
        }
    }

    @State(Scope.Benchmark)
    public static class Copy extends Samples {
        @Param({"1024"})
        public int copyMiB;

        MemorySegment[] src = new MemorySegment[2], dst = new MemorySegment[2];
        long bytes;

        @Setup(Level.Trial)
        public void setup() {
            Gpu.require();
            bytes = (long) copyMiB << 20;
            for (int i = 0; i < 2; i++) {
                src[i] = NativeCuda.malloc(bytes);
                dst[i] = NativeCuda.malloc(bytes);
                NativeCuda.memset(src[i], 0x3c, bytes, 0L);
                NativeCuda.memset(dst[i], 0, bytes, 0L);
            }
            events();
            NativeCuda.streamSynchronize(0L);
        }

        @TearDown(Level.Trial)
        public void tearDown() {
            Map<String, Object> row = new LinkedHashMap<>();
            row.put("benchmark", "copy");
            row.put("copyMiB", (long) copyMiB);
            row.put("trafficBytes", 2 * bytes);
            writeSummary(row);
            for (int i = 0; i < 2; i++) Gpu.free(src[i], dst[i]);
            closeEvents();
        }
    }

    @Benchmark
    public void kernel(Kernel k, DeviceTime t) {
        NativeCuda.eventRecord(k.ev0, k.stream);
        for (int i = 0; i < k.sets; i++) k.batches[i].runOnDevice(k.stream);
        NativeCuda.eventRecord(k.ev1, k.stream);
        NativeCuda.streamSynchronize(k.stream);
        float us = NativeCuda.eventElapsedMs(k.ev0, k.ev1) * 1000f;
        t.deviceUs += us;
        t.launches += k.sets;
        k.record(us / k.sets);
    }

    @Benchmark
    public void copy(Copy c, DeviceTime t) {
        NativeCuda.eventRecord(c.ev0, c.stream);
        for (int i = 0; i < 2; i++) NativeCuda.copyDeviceToDevice(c.dst[i], c.src[i], c.bytes, c.stream);
        NativeCuda.eventRecord(c.ev1, c.stream);
        NativeCuda.streamSynchronize(c.stream);
        float us = NativeCuda.eventElapsedMs(c.ev0, c.ev1) * 1000f;
        t.deviceUs += us;
        t.launches += 2;
        c.record(us / 2);
    }
}
