package ai.aligndistil.bench;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

import org.bytedeco.cuda.cudart.CUevent_st;
import org.bytedeco.cuda.cudart.CUstream_st;
import org.bytedeco.cuda.global.cudart;
import org.bytedeco.javacpp.Loader;
import org.bytedeco.javacpp.Pointer;

import ai.aligndistil.io.Json;
import ai.aligndistil.kernel.Backend;
import ai.aligndistil.kernel.Backends;
import ai.aligndistil.io.DType;
import ai.aligndistil.kernel.FusedDistillLoss;
import ai.aligndistil.kernel.LossConfig;
import ai.aligndistil.kernel.NativeCuda;
import ai.aligndistil.kernel.Variant;

/**
 * Do the JavaCPP CUDA presets on the design card load and work here, and where they do, are they a usable way to
 * drive the project's kernels from Java?
 *
 * <p>Release {@code org.bytedeco:cuda:13.1-9.19-1.5.13} is built against CUDA 13.1; the GPU boxes run CUDA 13.0 with a
 * 580.x driver. Its JNI library binds {@code libcudart.so.13} and {@code libcuda.so.1} from the machine (the redist
 * jars that would bring CUDA 13.1 along are not used: they are gigabytes). On the build machine, its cudart bindings
 * reference 21 runtime functions that CUDA 13.0's {@code libcudart.so.13} does not define (execution contexts, green
 * contexts, graph ids); they are bound lazily, so the library can load, and a call to one of them would end the
 * process ({@code symbol lookup error}). This probe calls only functions CUDA 13.0 has, and avoids structures whose
 * layout may differ between 13.0 and 13.1 ({@code cudaDeviceProp}); run it in its own JVM all the same.
 *
 * <p>Stages, each reported as it ends; the first that fails ends the probe with exit code 0 (a finding, not an
 * error):
 * <ol>
 *   <li>{@code load}: {@code Loader.load(cudart.class)};</li>
 *   <li>{@code versions}: runtime and driver versions, device count;</li>
 *   <li>{@code copy}: a device-to-device copy timed with the presets' memory, stream and events, and the same copy
 *       timed through the project's own library (NativeCuda) in the same run;</li>
 *   <li>{@code kernel}: the fused loss launched through the project's FFM API on device buffers, a stream and events
 *       that all come from the presets (a JavaCPP pointer's address is the MemorySegment: zero copy), its gradient
 *       copied back by the presets and checked against the float64 reference, then timed with the presets' events and
 *       with the project's events on the same stream.</li>
 * </ol>
 *
 * <p>Usage: {@code CudaPresetsProbe [--out FILE.json] [--vocab V] [--tokens N] [--dtype bf16|f32] [--copy-mib M]
 * [--reps R]}; defaults V = 151936, 4096 tokens, bf16, 1024 MiB, 20 repetitions. The last line printed is a one-line
 * summary starting with {@code cuda presets:}.
 */
public final class CudaPresetsProbe {
    private CudaPresetsProbe() {}

    private static final Map<String, Object> REPORT = new LinkedHashMap<>();
    private static Path out;

    public static void main(String[] args) throws IOException {
        int vocab = 151936, tokens = 4096, copyMiB = 1024, reps = 20;
        String dtype = "bf16";
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            if (i + 1 >= args.length) usage("missing value after " + a);
            String v = args[++i];
            switch (a) {
                case "--out" -> out = Path.of(v);
                case "--vocab" -> vocab = positive(a, v);
                case "--tokens" -> tokens = positive(a, v);
                case "--dtype" -> dtype = v;
                case "--copy-mib" -> copyMiB = positive(a, v);
                case "--reps" -> reps = positive(a, v);
                default -> usage("unknown option " + a);
            }
        }
        DType dt = DType.parse(dtype);

        put("presets", "org.bytedeco:cuda:" + orUnknown(Loader.getVersion("org.bytedeco", "cuda")));
        put("javacpp", orUnknown(Loader.getVersion()));
        put("ldLibraryPath", orUnknown(System.getenv("LD_LIBRARY_PATH")));

        // 1. load
        try {
            Loader.load(cudart.class);
            put("loads", true);
        } catch (Throwable t) {
            put("loads", false);
            finish("does not load: " + causes(t));
            return;
        }

        // 2. versions
        int[] v = new int[1];
        int rc = cudart.cudaRuntimeGetVersion(v);
        put("runtimeVersion", rc == 0 ? v[0] : -1);
        rc = cudart.cudaDriverGetVersion(v);
        put("driverVersion", rc == 0 ? v[0] : -1);
        rc = cudart.cudaGetDeviceCount(v);
        if (rc != 0 || v[0] < 1) {
            put("devices", 0);
            finish("loads; no device through the presets: " + (rc != 0 ? errorString(rc) : "0 devices"));
            return;
        }
        put("devices", v[0]);
        boolean ours = Backends.available(Backend.CUDA);
        put("projectLibrary", ours ? Gpu.describe() : "unavailable: " + NativeCuda.problem());

        // 3. copy bandwidth, presets vs the project's library
        CUstream_st stream = new CUstream_st();
        CUevent_st e0 = new CUevent_st(), e1 = new CUevent_st();
        check(cudart.cudaStreamCreate(stream), "cudaStreamCreate");
        check(cudart.cudaEventCreate(e0), "cudaEventCreate");
        check(cudart.cudaEventCreate(e1), "cudaEventCreate");
        long bytes = (long) copyMiB << 20;
        List<Pointer> owned = new ArrayList<>();
        try {
            Pointer[] src = new Pointer[2], dst = new Pointer[2];
            for (int i = 0; i < 2; i++) {
                src[i] = deviceAlloc(bytes, owned);
                dst[i] = deviceAlloc(bytes, owned);
                check(cudart.cudaMemset(src[i], 0x3c, bytes), "cudaMemset");
                check(cudart.cudaMemset(dst[i], 0, bytes), "cudaMemset");
            }
            check(cudart.cudaDeviceSynchronize(), "cudaDeviceSynchronize");
            float[] ms = new float[1];
            double[] presetsUs = new double[reps];
            for (int r = -2; r < reps; r++) { // two warm-up rounds
                check(cudart.cudaEventRecord(e0, stream), "cudaEventRecord");
                for (int i = 0; i < 2; i++)
                    check(cudart.cudaMemcpyAsync(dst[i], src[i], bytes, cudart.cudaMemcpyDeviceToDevice, stream), "cudaMemcpyAsync");
                check(cudart.cudaEventRecord(e1, stream), "cudaEventRecord");
                check(cudart.cudaEventSynchronize(e1), "cudaEventSynchronize");
                check(cudart.cudaEventElapsedTime(ms, e0, e1), "cudaEventElapsedTime");
                if (r >= 0) presetsUs[r] = ms[0] * 1000.0 / 2;
            }
            Map<String, Object> copy = new LinkedHashMap<>();
            copy.put("bytes", bytes);
            copy.put("presetsMedianUs", median(presetsUs));
            copy.put("presetsGBps", 2.0 * bytes / median(presetsUs) / 1e3);
            if (ours) {
                long s = stream.address(), a = NativeCuda.eventCreate(), b = NativeCuda.eventCreate();
                double[] oursUs = new double[reps];
                for (int r = -2; r < reps; r++) {
                    NativeCuda.eventRecord(a, s);
                    for (int i = 0; i < 2; i++) NativeCuda.copyDeviceToDevice(segment(dst[i], bytes), segment(src[i], bytes), bytes, s);
                    NativeCuda.eventRecord(b, s);
                    NativeCuda.streamSynchronize(s);
                    if (r >= 0) oursUs[r] = NativeCuda.eventElapsedMs(a, b) * 1000.0 / 2;
                }
                NativeCuda.eventDestroy(a);
                NativeCuda.eventDestroy(b);
                copy.put("projectMedianUs", median(oursUs));
                copy.put("projectGBps", 2.0 * bytes / median(oursUs) / 1e3);
            }
            put("copy", copy);
            for (Pointer p : owned) cudart.cudaFree(p);
            owned.clear();
            if (!ours) {
                finish("loads and works (copy " + fmt(2.0 * bytes / median(presetsUs) / 1e3) + " GB/s); kernel not run: the project's CUDA library is unavailable");
                return;
            }

            // 4. the project's kernel on presets memory, stream and events
            LossConfig cfg = LossConfig.defaults(Variant.ALIGNDISTIL);
            try (BenchData data = new BenchData(tokens, vocab, dt, dt, FusedLossBench.SEED)) {
                double oracle = Verify.oracleLoss(data, cfg);
                long setBytes = data.trafficBytes();
                long want = Math.max(2, Math.min(64, (4 * Gpu.l2Bytes() + setBytes - 1) / setBytes));
                int sets = (int) Math.min(want, (long) (0.5 * Gpu.globalBytes()) / setBytes);
                if (sets < 1) throw new IllegalStateException("one input set of " + setBytes + " bytes does not fit in half the device memory");
                long inBytes = data.student.byteSize(), gBytes = data.grad.byteSize();
                Pointer dM = deviceAlloc(data.mask.byteSize(), owned);
                check(cudart.cudaMemcpy(dM, host(data.mask), data.mask.byteSize(), cudart.cudaMemcpyHostToDevice), "cudaMemcpy");
                FusedDistillLoss op = FusedDistillLoss.create(cfg, Backend.CUDA);
                FusedDistillLoss.Batch[] batches = new FusedDistillLoss.Batch[sets];
                Pointer[] grads = new Pointer[sets];
                long s = stream.address();
                try {
                    for (int i = 0; i < sets; i++) {
                        Pointer dS = deviceAlloc(inBytes, owned), dD = deviceAlloc(inBytes, owned), dR = deviceAlloc(inBytes, owned);
                        grads[i] = deviceAlloc(gBytes, owned);
                        check(cudart.cudaMemcpy(dS, host(data.student), inBytes, cudart.cudaMemcpyHostToDevice), "cudaMemcpy");
                        check(cudart.cudaMemcpy(dD, host(data.dpo), inBytes, cudart.cudaMemcpyHostToDevice), "cudaMemcpy");
                        check(cudart.cudaMemcpy(dR, host(data.second), inBytes, cudart.cudaMemcpyHostToDevice), "cudaMemcpy");
                        batches[i] = op.newBatch(data.B, data.T, data.V).student(segment(dS, inBytes), dt).dpo(segment(dD, inBytes), dt)
                                .second(segment(dR, inBytes), dt).mask(segment(dM, data.mask.byteSize())).grad(segment(grads[i], gBytes), dt);
                    }
                    batches[0].runOnDevice(s);
                    double loss = batches[0].synchronize(s);
                    data.poisonGrad();
                    check(cudart.cudaMemcpy(host(data.grad), grads[0], gBytes, cudart.cudaMemcpyDeviceToHost), "cudaMemcpy");
                    String verified = Verify.other("fused cuda on presets memory", data, cfg, data.grad, dt, loss, oracle);
                    System.out.println("[probe] " + verified);

                    double[] kPresetsUs = new double[reps], kOursUs = new double[reps];
                    long a = NativeCuda.eventCreate(), b = NativeCuda.eventCreate();
                    for (int r = -2; r < reps; r++) { // presets events and the project's events interleaved, same stream
                        check(cudart.cudaEventRecord(e0, stream), "cudaEventRecord");
                        for (FusedDistillLoss.Batch batch : batches) batch.runOnDevice(s);
                        check(cudart.cudaEventRecord(e1, stream), "cudaEventRecord");
                        check(cudart.cudaEventSynchronize(e1), "cudaEventSynchronize");
                        check(cudart.cudaEventElapsedTime(ms, e0, e1), "cudaEventElapsedTime");
                        NativeCuda.eventRecord(a, s);
                        for (FusedDistillLoss.Batch batch : batches) batch.runOnDevice(s);
                        NativeCuda.eventRecord(b, s);
                        NativeCuda.streamSynchronize(s);
                        if (r >= 0) {
                            kPresetsUs[r] = ms[0] * 1000.0 / sets;
                            kOursUs[r] = NativeCuda.eventElapsedMs(a, b) * 1000.0 / sets;
                        }
                    }
                    batches[sets - 1].synchronize(s); // checks the status of the last launch
                    NativeCuda.eventDestroy(a);
                    NativeCuda.eventDestroy(b);
                    Map<String, Object> k = new LinkedHashMap<>();
                    k.put("vocab", (long) vocab);
                    k.put("tokens", (long) tokens);
                    k.put("dtype", dt.name().toLowerCase(Locale.ROOT));
                    k.put("rowKernel", NativeCuda.kernel());
                    k.put("sets", (long) sets);
                    k.put("verified", verified);
                    k.put("presetsEventsMedianUs", median(kPresetsUs));
                    k.put("projectEventsMedianUs", median(kOursUs));
                    k.put("presetsGBps", setBytes / median(kPresetsUs) / 1e3);
                    put("kernel", k);
                    finish(String.format(Locale.ROOT, "loads and works: copy %s GB/s (project library %s GB/s); fused kernel verified on presets memory, "
                            + "%.1f us per launch by the presets' events, %.1f us by the project's", fmt(2.0 * bytes / median(presetsUs) / 1e3),
                            fmt((Double) copy.get("projectGBps")), median(kPresetsUs), median(kOursUs)));
                } finally {
                    for (FusedDistillLoss.Batch batch : batches) if (batch != null) batch.close();
                }
            }
        } catch (RuntimeException e) {
            put("error", causes(e));
            finish("loads, but failed: " + causes(e));
        } finally {
            for (Pointer p : owned) cudart.cudaFree(p);
            cudart.cudaEventDestroy(e0);
            cudart.cudaEventDestroy(e1);
            cudart.cudaStreamDestroy(stream);
        }
    }

    /** A device buffer from the presets' cudaMalloc (freed at the end through {@code owned}). */
    private static Pointer deviceAlloc(long bytes, List<Pointer> owned) {
        Pointer p = new Pointer();
        check(cudart.cudaMalloc(p, bytes), "cudaMalloc(" + bytes + ")");
        owned.add(p);
        return p;
    }

    /** The device buffer as the project's API takes it: the same address, no copy. */
    private static MemorySegment segment(Pointer device, long bytes) {
        return MemorySegment.ofAddress(device.address()).reinterpret(bytes);
    }

    /** A host MemorySegment as a JavaCPP pointer (the same address, no copy; the segment keeps owning the memory). */
    private static Pointer host(MemorySegment seg) {
        final long address = seg.address(), bytes = seg.byteSize();
        return new Pointer() {
            {
                this.address = address;
                this.limit = bytes;
                this.capacity = bytes;
            }
        };
    }

    private static void check(int rc, String what) {
        if (rc != 0) throw new IllegalStateException(what + " failed through the presets: " + errorString(rc));
    }

    private static String errorString(int rc) {
        try {
            return cudart.cudaGetErrorString(rc).getString() + " (" + rc + ")";
        } catch (Throwable t) {
            return "error " + rc;
        }
    }

    private static double median(double[] x) {
        double[] s = x.clone();
        Arrays.sort(s);
        return s.length == 0 ? Double.NaN : s[s.length / 2];
    }

    private static String fmt(Double d) { return d == null ? "n/a" : String.format(Locale.ROOT, "%.0f", d); }

    private static String orUnknown(String s) { return s == null || s.isBlank() ? "unknown" : s; }

    private static String causes(Throwable t) {
        StringBuilder b = new StringBuilder();
        for (Throwable c = t; c != null; c = c.getCause()) {
            if (b.length() > 0) b.append(" <- ");
            b.append(c.getClass().getSimpleName()).append(": ").append(c.getMessage());
        }
        return b.toString();
    }

    private static int positive(String flag, String v) {
        try {
            int n = Integer.parseInt(v);
            if (n > 0) return n;
        } catch (NumberFormatException e) {
            // falls through to the usage error
        }
        usage(flag + " needs a positive integer, got '" + v + "'");
        return 0;
    }

    private static void usage(String why) {
        System.err.println("CudaPresetsProbe: " + why);
        System.err.println("usage: CudaPresetsProbe [--out FILE.json] [--vocab V] [--tokens N] [--dtype bf16|f32] [--copy-mib M] [--reps R]");
        System.exit(2);
    }

    private static void put(String key, Object value) {
        REPORT.put(key, value);
        System.out.println("[probe] " + key + " = " + value);
    }

    private static void finish(String summary) throws IOException {
        REPORT.put("summary", summary);
        String json = Json.write(REPORT);
        if (out != null) {
            if (out.getParent() != null) Files.createDirectories(out.getParent());
            Files.writeString(out, json + "\n", StandardCharsets.UTF_8);
        }
        System.out.println(json);
        System.out.println("cuda presets: " + summary);
    }
}
