package ai.aligndistil.model;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;
import java.io.File;
import java.util.Locale;
import java.util.logging.Logger;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import org.bytedeco.pytorch.Device;
import org.bytedeco.pytorch.global.torch;

/**
 * Where a run's models live: {@code --device auto|cpu|cuda|cuda:N}.
 *
 * <p>{@link #resolve} turns the option into a {@link Choice} <i>before</i> any model is loaded. {@code auto} picks
 * {@code cuda:0} when CUDA answers (GPU build on the class path, {@code libtorch_cuda.so} loaded, a device), else
 * the CPU, and logs the choice once. An explicit {@code cuda} that cannot be used throws
 * {@link UnavailableException} whose message is one line naming the requested device and the cause, found in this
 * order: the GPU build of the PyTorch presets is not on the class path (the CPU build never has CUDA); no NVIDIA driver
 * ({@code libcuda.so.1} does not open); a driver older than CUDA 13 (the presets are built with CUDA 13.1, which runs
 * on a 13.0 driver by minor-version compatibility); {@code libtorch_cuda.so} did not load and the library it was
 * missing (read from the dynamic loader's message: {@code cuda_is_available()} alone is just false); no device; an
 * index past the last device. Every {@code torch_cuda} reference of the project sits behind such a check (the
 * class's static initialiser needs the GPU natives).
 */
@SuppressWarnings("restricted")
public final class Devices {
    private static final Logger LOG = Logger.getLogger(Devices.class.getName());
    /** The folder of the GPU natives inside the presets' jar (classifier {@code linux-x86_64-gpu}). */
    static final String GPU_NATIVES = "/org/bytedeco/pytorch/linux-x86_64-gpu/";
    /** The oldest driver API version the presets' CUDA 13.1 runtime accepts (13.0, by minor-version compatibility). */
    static final int MIN_DRIVER = 13000;
    private static volatile boolean autoLogged;

    private Devices() {}

    /** The option was not understood, or the device it names cannot be used here. The message is one line. */
    public static final class UnavailableException extends RuntimeException {
        private static final long serialVersionUID = 1L;
        public UnavailableException(String message) { super(message); }
    }

    /** A resolved device: {@code cpu} or {@code cuda:N}. */
    public record Choice(boolean cuda, int index) {
        public static final Choice CPU = new Choice(false, 0);

        /** {@code cpu} or {@code cuda:N}. */
        public String name() { return cuda ? "cuda:" + index : "cpu"; }

        /** A libtorch device (a new native object: create it inside a scope or keep it). */
        public Device torch() { return new Device(name()); }

        @Override public String toString() { return name(); }
    }

    /** What {@code --device} may say: {@code auto}, {@code cpu}, {@code cuda} or {@code cuda:N}. */
    public record Request(boolean auto, boolean cuda, int index) {
        public static Request parse(String spec) {
            String s = spec == null ? "" : spec.trim().toLowerCase(Locale.ROOT);
            if (s.equals("auto")) return new Request(true, false, 0);
            if (s.equals("cpu")) return new Request(false, false, 0);
            if (s.equals("cuda")) return new Request(false, true, 0);
            Matcher m = Pattern.compile("cuda:(\\d{1,3})").matcher(s);
            if (m.matches()) return new Request(false, true, Integer.parseInt(m.group(1)));
            throw new UnavailableException("--device must be auto, cpu, cuda or cuda:N, got '" + spec + "'");
        }
    }

    /** Resolves {@code --device}; throws {@link UnavailableException} (one line) when CUDA was asked for and cannot be used. */
    public static Choice resolve(String spec) {
        Request r = Request.parse(spec);
        if (!r.cuda() && !r.auto()) return Choice.CPU;
        String problem = cudaProblem(r.index());
        if (r.auto()) {
            Choice c = problem == null ? new Choice(true, 0) : Choice.CPU;
            if (!autoLogged) {
                autoLogged = true;
                LOG.info("--device auto: " + c.name() + (problem == null ? "" : " (CUDA not usable: " + problem + ")"));
            }
            return c;
        }
        if (problem != null) throw new UnavailableException("--device " + spec.trim() + ": CUDA is not usable: " + problem);
        if (r.index() > 0) setCurrentDevice(r.index()); // the fused kernel launches on the current device's stream
        return new Choice(true, r.index());
    }

    /** Facts about this process's CUDA, gathered by {@link #probe()}; {@link #diagnose} turns them into a cause. */
    public record Facts(boolean gpuBuild, String driverProblem, int driverVersion, String torchCudaLoadError,
                        boolean cudaAvailable, int deviceCount) {}

    /** Why {@code cuda:index} cannot be used, or null when it can (one phrase, no trailing period). */
    public static String cudaProblem(int index) {
        return diagnose(probe(), index);
    }

    /** The cause of {@code facts} for {@code cuda:index}, or null when it is usable. Pure: unit-tested on every branch. */
    public static String diagnose(Facts f, int index) {
        if (!f.gpuBuild())
            return "the GPU build of the PyTorch presets is not on the class path (this is the CPU build: build and run with ALIGNDISTIL_GPU=1 ./aligndistil ...)";
        if (f.driverProblem() != null) return f.driverProblem();
        if (f.driverVersion() > 0 && f.driverVersion() < MIN_DRIVER)
            return "the NVIDIA driver is too old: it supports CUDA " + version(f.driverVersion()) + ", the GPU build needs CUDA " + version(MIN_DRIVER) + " or newer (driver 580+)";
        if (!f.cudaAvailable()) {
            if (f.torchCudaLoadError() != null)
                return f.torchCudaLoadError().startsWith("libtorch itself") ? f.torchCudaLoadError() : "libtorch_cuda.so did not load: " + f.torchCudaLoadError();
            if (f.deviceCount() == 0) return "the driver reports no CUDA device";
            return "libtorch reports CUDA unavailable (run with -Dorg.bytedeco.javacpp.logger.debug=true to see what the loader tried)";
        }
        if (f.deviceCount() <= index)
            return "cuda:" + index + " was asked for but the driver reports " + f.deviceCount() + " device" + (f.deviceCount() == 1 ? "" : "s");
        return null;
    }

    static String version(int v) { return (v / 1000) + "." + (v % 1000) / 10; }

    /** Gathers the facts: the class path, the driver through {@code libcuda.so.1}, libtorch and, if it is false, why. */
    public static Facts probe() {
        boolean gpu = gpuBuildOnClassPath();
        if (!gpu) return new Facts(false, null, 0, null, false, 0);
        int[] driver = new int[2];
        String driverProblem = driver(driver);
        if (driverProblem != null || driver[0] < MIN_DRIVER) return new Facts(true, driverProblem, driver[0], null, false, driver[1]);
        try {
            TorchRuntime.init();
        } catch (UnsatisfiedLinkError e) {
            // the GPU build's libtorch_cpu.so itself needs cudart 13 and cupti 13
            return new Facts(true, null, driver[0], "libtorch itself did not load: " + missingLibrary(e.getMessage()), false, driver[1]);
        }
        boolean avail = torch.cuda_is_available();
        int count = avail ? torch.cuda_device_count() : driver[1];
        String loadError = avail ? null : torchCudaLoadError();
        return new Facts(true, null, driver[0], loadError, avail, count);
    }

    /** Whether the presets' GPU natives ({@code linux-x86_64-gpu}) are on the class path. */
    public static boolean gpuBuildOnClassPath() {
        return torch.class.getResource(GPU_NATIVES) != null;
    }

    /** Driver version and device count through libcuda.so.1 (into out[0], out[1]); a problem phrase, or null. */
    private static String driver(int[] out) {
        SymbolLookup cuda;
        try {
            cuda = SymbolLookup.libraryLookup("libcuda.so.1", Arena.global());
        } catch (IllegalArgumentException e) {
            return "no NVIDIA driver (libcuda.so.1 does not open: " + oneLine(e.getMessage()) + ")";
        }
        Linker l = Linker.nativeLinker();
        try (Arena a = Arena.ofConfined()) {
            MemorySegment v = a.allocate(ValueLayout.JAVA_INT);
            MethodHandle ver = l.downcallHandle(cuda.find("cuDriverGetVersion").orElseThrow(), FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.ADDRESS));
            int rc = (int) ver.invokeExact(v);
            if (rc != 0) return "cuDriverGetVersion failed with CUDA error " + rc;
            out[0] = v.get(ValueLayout.JAVA_INT, 0);
            MethodHandle init = l.downcallHandle(cuda.find("cuInit").orElseThrow(), FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.JAVA_INT));
            rc = (int) init.invokeExact(0);
            if (rc == 100) return "the driver reports no CUDA device (cuInit: CUDA_ERROR_NO_DEVICE)";
            if (rc != 0) return "cuInit failed with CUDA error " + rc + (rc == 999 ? " (unknown error: often a driver/kernel-module mismatch)" : "");
            MethodHandle count = l.downcallHandle(cuda.find("cuDeviceGetCount").orElseThrow(), FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.ADDRESS));
            rc = (int) count.invokeExact(v);
            if (rc != 0) return "cuDeviceGetCount failed with CUDA error " + rc;
            out[1] = v.get(ValueLayout.JAVA_INT, 0);
            return null;
        } catch (Throwable t) {
            return "the NVIDIA driver could not be queried: " + oneLine(String.valueOf(t.getMessage()));
        }
    }

    /**
     * Why {@code libtorch_cuda.so} (extracted by {@link TorchRuntime#init()} into the JavaCPP cache) does not load:
     * {@code System.load} of it, whose {@link UnsatisfiedLinkError} carries the dynamic loader's message naming the
     * missing soname. Null when it loads or cannot be found.
     */
    static String torchCudaLoadError() {
        File lib = TorchRuntime.nativeFile("libtorch_cuda.so");
        if (lib == null) return "libtorch_cuda.so is not among the extracted natives";
        try {
            System.load(lib.getAbsolutePath());
            return null;
        } catch (UnsatisfiedLinkError e) {
            return missingLibrary(e.getMessage());
        }
    }

    /** The loader's message reduced to its cause: "libcublas.so.13 is missing (cannot open shared object file)" where it names one. */
    static String missingLibrary(String loaderMessage) {
        String m = oneLine(loaderMessage);
        Matcher x = Pattern.compile("(lib[\\w.+-]+\\.so[\\w.]*): cannot open shared object file").matcher(m);
        if (x.find()) return x.group(1) + " is missing (not found on the loader path: LD_LIBRARY_PATH, ldconfig)";
        return m;
    }

    private static String oneLine(String s) { return s == null ? "" : s.replaceAll("\\s+", " ").trim(); }

    // ------------------------------------------------------------------ CUDA through libtorch (reflective: the CPU build has no torch_cuda natives)

    /**
     * libtorch's current CUDA stream of {@code device} as a raw {@code cudaStream_t}: the stream every libtorch op of
     * this thread is queued on, so a kernel launched there runs after the forwards that made its inputs and before the
     * backward that reads its output, with no synchronisation. 0 for the CPU.
     */
    public static long currentStream(Choice device) {
        if (!device.cuda()) return 0;
        return ChunkedFusedLinearLoss.CudaStreams.current();
    }

    private static void setCurrentDevice(int index) {
        try {
            Class.forName("org.bytedeco.pytorch.global.torch_cuda").getMethod("set_device", byte.class).invoke(null, (byte) index);
        } catch (ReflectiveOperationException e) {
            throw new UnavailableException("--device cuda:" + index + ": cannot make it the current device: " + e);
        }
    }

    private static Object allocator() throws Throwable {
        Class<?> tc = Class.forName("org.bytedeco.pytorch.global.torch_cuda");
        return tc.getMethod("getAllocator").invoke(null);
    }

    /** Free bytes of {@code device}: cudaMemGetInfo through libtorch's allocator on CUDA, MemAvailable on the CPU; -1 if unknown. */
    public static long freeBytes(Choice device) {
        if (!device.cuda()) return MemoryPlan.hostAvailable();
        try {
            Object a = allocator();
            Object pair = a.getClass().getMethod("getMemoryInfo", byte.class).invoke(a, (byte) device.index());
            return (long) pair.getClass().getMethod("first").invoke(pair);
        } catch (Throwable t) {
            LOG.warning("free device memory unknown: " + t);
            return -1;
        }
    }

    /**
     * The peak memory since the last call, for the step metrics: on CUDA the allocator's peak allocated and reserved
     * bytes ({@code peak_allocated_bytes}, {@code peak_reserved_bytes}; the peaks are reset after reading), on the CPU
     * the process's peak resident set ({@code peak_rss_bytes}, VmHWM, reset through /proc/self/clear_refs where the
     * kernel allows it, else the peak since start).
     */
    public static java.util.Map<String, Object> peakMemory(Choice device) {
        java.util.Map<String, Object> m = new java.util.LinkedHashMap<>();
        if (device.cuda()) {
            try {
                Object a = allocator();
                byte i = (byte) device.index();
                Object st = a.getClass().getMethod("getDeviceStats", byte.class).invoke(a, i);
                Object alloc = st.getClass().getMethod("allocated_bytes").invoke(st), res = st.getClass().getMethod("reserved_bytes").invoke(st);
                m.put("peak_allocated_bytes", (long) alloc.getClass().getMethod("peak").invoke(alloc));
                m.put("peak_reserved_bytes", (long) res.getClass().getMethod("peak").invoke(res));
                a.getClass().getMethod("resetPeakStats", byte.class).invoke(a, i);
            } catch (Throwable t) {
                m.put("peak_allocated_bytes", -1L);
            }
            return m;
        }
        m.put("peak_rss_bytes", peakRss());
        return m;
    }

    /** VmHWM of /proc/self/status in bytes (then reset through clear_refs), or -1. */
    static long peakRss() {
        long v = -1;
        try {
            for (String line : java.nio.file.Files.readAllLines(java.nio.file.Path.of("/proc/self/status"))) {
                if (line.startsWith("VmHWM:")) v = Long.parseLong(line.replaceAll("[^0-9]", "")) * 1024;
            }
            java.nio.file.Files.writeString(java.nio.file.Path.of("/proc/self/clear_refs"), "5");
        } catch (java.io.IOException | RuntimeException e) {
            // not Linux, or clear_refs refused: the peak since start
        }
        return v;
    }
}
