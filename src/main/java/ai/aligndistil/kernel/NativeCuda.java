package ai.aligndistil.kernel;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;

/**
 * FFM bindings of libaligndistil_cuda: the fused loss launcher and the few runtime functions Java needs to
 * drive a GPU without any other binding (device memory, copies, streams, events, NVTX). Every function
 * returns normally or throws {@link CudaException} with the runtime's own message; nothing here exits.
 *
 * <p>{@link #available()} is true only when the library loaded and at least one GPU answers.
 *
 * <p>Row kernel (system property {@code aligndistil.cuda.kernel} = auto | multipass | cluster, default: not set,
 * which leaves the library's own setting: the environment variable {@code AD_CUDA_KERNEL}, else auto). "cluster"
 * runs the Hopper thread-block-cluster kernel wherever it applies (compute capability 9.0+, one input dtype,
 * 16-byte aligned rows, V within 16 CTAs' shared memory) and the portable multi-pass kernel elsewhere; "auto"
 * means multipass unless the library was built with {@code -DAD_CUDA_CLUSTER_AUTO=ON}. The cluster kernel is
 * compile-checked only (never run on a GPU yet). The first launch logs which kernel ran.
 */
public final class NativeCuda {
    private NativeCuda() {}

    /** A failed CUDA runtime call. */
    public static final class CudaException extends RuntimeException {
        private static final long serialVersionUID = 1L;
        public CudaException(String message) { super(message); }
    }

    private static final ValueLayout P = ValueLayout.ADDRESS;
    private static final ValueLayout I = ValueLayout.JAVA_INT;
    private static final ValueLayout L = ValueLayout.JAVA_LONG;

    private static final class Holder {
        static final NativeLibraries.Loaded LIB = NativeLibraries.load("aligndistil_cuda");
        static final MethodHandle FDL, WS, COUNT, NAME, INFO, SET_DEVICE, MALLOC, FREE, HTOD, DTOH, DTOD, MEMSET,
                STREAM_CREATE, STREAM_DESTROY, STREAM_SYNC, EVENT_CREATE, EVENT_DESTROY, EVENT_RECORD, EVENT_ELAPSED,
                LAST_ERROR, NVTX_PUSH, NVTX_POP, PROF_START, PROF_STOP, SET_KERNEL, GET_KERNEL, KERNEL_FOR;
        static final String PROBLEM;
        static final int DEVICES;

        static {
            MethodHandle[] h = new MethodHandle[27];
            String problem = LIB.problem();
            int devices = 0;
            if (LIB.ok()) {
                try {
                    Linker l = Linker.nativeLinker();
                    SymbolLookup s = LIB.lookup();
                    // Device pointers and the stream travel as int64 (same calling convention as a pointer on 64-bit ABIs),
                    // so the hot path creates no MemorySegment objects.
                    h[0] = bind(l, s, "ad_fdl_cuda", FunctionDescriptor.of(I, P, L, L, L, L, L));
                    h[1] = bind(l, s, "ad_fdl_cuda_workspace_bytes", FunctionDescriptor.of(I, P, P));
                    h[2] = bind(l, s, "ad_cuda_device_count", FunctionDescriptor.of(I, P));
                    h[3] = bind(l, s, "ad_cuda_device_name", FunctionDescriptor.of(I, I, P, L));
                    h[4] = bind(l, s, "ad_cuda_device_info", FunctionDescriptor.of(I, I, P));
                    h[5] = bind(l, s, "ad_cuda_set_device", FunctionDescriptor.of(I, I));
                    h[6] = bind(l, s, "ad_cuda_malloc", FunctionDescriptor.of(I, P, L));
                    h[7] = bind(l, s, "ad_cuda_free", FunctionDescriptor.of(I, P));
                    h[8] = bind(l, s, "ad_cuda_memcpy_htod", FunctionDescriptor.of(I, P, P, L, P));
                    h[9] = bind(l, s, "ad_cuda_memcpy_dtoh", FunctionDescriptor.of(I, P, P, L, P));
                    h[10] = bind(l, s, "ad_cuda_memcpy_dtod", FunctionDescriptor.of(I, P, P, L, P));
                    h[11] = bind(l, s, "ad_cuda_memset", FunctionDescriptor.of(I, P, I, L, P));
                    h[12] = bind(l, s, "ad_cuda_stream_create", FunctionDescriptor.of(I, P));
                    h[13] = bind(l, s, "ad_cuda_stream_destroy", FunctionDescriptor.of(I, P));
                    h[14] = bind(l, s, "ad_cuda_stream_synchronize", FunctionDescriptor.of(I, P));
                    h[15] = bind(l, s, "ad_cuda_event_create", FunctionDescriptor.of(I, P));
                    h[16] = bind(l, s, "ad_cuda_event_destroy", FunctionDescriptor.of(I, P));
                    h[17] = bind(l, s, "ad_cuda_event_record", FunctionDescriptor.of(I, P, P));
                    h[18] = bind(l, s, "ad_cuda_event_elapsed_ms", FunctionDescriptor.of(I, P, P, P));
                    h[19] = bind(l, s, "ad_cuda_last_error", FunctionDescriptor.of(P));
                    h[20] = bind(l, s, "ad_nvtx_push", FunctionDescriptor.of(I, P));
                    h[21] = bind(l, s, "ad_nvtx_pop", FunctionDescriptor.of(I));
                    h[22] = bind(l, s, "ad_cuda_profiler_start", FunctionDescriptor.of(I));
                    h[23] = bind(l, s, "ad_cuda_profiler_stop", FunctionDescriptor.of(I));
                    h[24] = bind(l, s, "ad_cuda_set_kernel", FunctionDescriptor.of(I, I));
                    h[25] = bind(l, s, "ad_cuda_get_kernel", FunctionDescriptor.of(I, P));
                    h[26] = bind(l, s, "ad_cuda_kernel_for", FunctionDescriptor.of(I, P, I, P));
                    try (Arena a = Arena.ofConfined()) {
                        MemorySegment c = a.allocate(ValueLayout.JAVA_INT);
                        int rc = (int) h[2].invokeExact(c);
                        devices = rc == 0 ? c.get(ValueLayout.JAVA_INT, 0) : 0;
                    }
                    if (devices == 0) problem = "no CUDA device (library " + LIB.path() + " loaded, driver reports 0 GPUs)";
                } catch (Throwable t) {
                    problem = "symbol binding failed: " + t.getMessage();
                    h[0] = null;
                }
            }
            FDL = h[0]; WS = h[1]; COUNT = h[2]; NAME = h[3]; INFO = h[4]; SET_DEVICE = h[5]; MALLOC = h[6]; FREE = h[7];
            HTOD = h[8]; DTOH = h[9]; DTOD = h[10]; MEMSET = h[11]; STREAM_CREATE = h[12]; STREAM_DESTROY = h[13];
            STREAM_SYNC = h[14]; EVENT_CREATE = h[15]; EVENT_DESTROY = h[16]; EVENT_RECORD = h[17]; EVENT_ELAPSED = h[18];
            LAST_ERROR = h[19]; NVTX_PUSH = h[20]; NVTX_POP = h[21]; PROF_START = h[22]; PROF_STOP = h[23];
            SET_KERNEL = h[24]; GET_KERNEL = h[25]; KERNEL_FOR = h[26];
            // -Daligndistil.cuda.kernel, when given, overrides the library's setting (AD_CUDA_KERNEL or auto); a bad
            // value makes the backend unavailable with a message saying why, rather than silently running another kernel.
            String kernelProblem = null;
            String prop = System.getProperty(KERNEL_PROPERTY);
            if (FDL != null && prop != null && !prop.isBlank()) {
                try {
                    int k = parseKernel(prop);
                    if ((int) SET_KERNEL.invokeExact(k) != 0) kernelProblem = "ad_cuda_set_kernel(" + k + ") failed";
                } catch (IllegalArgumentException e) {
                    kernelProblem = e.getMessage();
                } catch (Throwable t) {
                    kernelProblem = "ad_cuda_set_kernel failed: " + t;
                }
            }
            DEVICES = devices;
            PROBLEM = kernelProblem != null ? kernelProblem : (FDL != null && devices > 0) ? null : problem;
        }

        private static MethodHandle bind(Linker l, SymbolLookup s, String name, FunctionDescriptor d) {
            return l.downcallHandle(s.find(name).orElseThrow(() -> new IllegalStateException("missing symbol " + name)), d);
        }
    }

    /** System property choosing the row kernel: auto | multipass | cluster (see the class comment). */
    public static final String KERNEL_PROPERTY = "aligndistil.cuda.kernel";
    /** The C ABI's AD_CUDA_KERNEL_* values. */
    public static final int KERNEL_AUTO = 0, KERNEL_MULTIPASS = 1, KERNEL_CLUSTER = 2;
    private static final String[] KERNEL_NAMES = {"auto", "multipass", "cluster"};
    private static volatile boolean kernelLogged;

    /** "auto" | "multipass" | "cluster" (any case, surrounding blanks ignored) to its AD_CUDA_KERNEL_* value. */
    public static int parseKernel(String name) {
        String n = name.trim().toLowerCase(java.util.Locale.ROOT);
        for (int i = 0; i < KERNEL_NAMES.length; i++) if (KERNEL_NAMES[i].equals(n)) return i;
        throw new IllegalArgumentException("-D" + KERNEL_PROPERTY + "=" + name + ": expected auto, multipass or cluster");
    }

    /** The name of an AD_CUDA_KERNEL_* value. */
    public static String kernelName(int kernel) {
        if (kernel < 0 || kernel >= KERNEL_NAMES.length) throw new IllegalArgumentException("kernel " + kernel);
        return KERNEL_NAMES[kernel];
    }

    /** Sets the process-wide row kernel (auto | multipass | cluster); affects launches made after it returns. */
    public static void setKernel(String name) {
        int k = parseKernel(name);
        try {
            check((int) Holder.SET_KERNEL.invokeExact(k), "ad_cuda_set_kernel");
        } catch (CudaException e) {
            throw e;
        } catch (Throwable t) {
            throw wrap(t);
        }
    }

    /** The current row kernel setting: auto, multipass or cluster. */
    public static String kernel() {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment out = a.allocate(ValueLayout.JAVA_INT);
            check((int) Holder.GET_KERNEL.invokeExact(out), "ad_cuda_get_kernel");
            return kernelName(out.get(ValueLayout.JAVA_INT, 0));
        } catch (CudaException e) {
            throw e;
        } catch (Throwable t) {
            throw wrap(t);
        }
    }

    /** Which kernel ad_fdl_cuda would run for this problem struct on {@code device} (-1: current): multipass or cluster. */
    static String kernelFor(MemorySegment problem, int device) {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment out = a.allocate(ValueLayout.JAVA_INT);
            check((int) Holder.KERNEL_FOR.invokeExact(problem, device, out), "ad_cuda_kernel_for");
            return kernelName(out.get(ValueLayout.JAVA_INT, 0));
        } catch (CudaException e) {
            throw e;
        } catch (Throwable t) {
            throw wrap(t);
        }
    }

    /** Logs, once per process, which row kernel the first launch uses. */
    static void logKernelOnce(MemorySegment problem) {
        if (kernelLogged) return;
        synchronized (NativeCuda.class) {
            if (kernelLogged) return;
            kernelLogged = true;
        }
        String used;
        try {
            used = kernelFor(problem, -1);
        } catch (RuntimeException e) {
            kernelLogged = false; // an invalid problem: ad_fdl_cuda reports it; log with the next valid one
            return;
        }
        Backends.LOG.log(System.Logger.Level.INFO, "aligndistil: CUDA row kernel " + used
                + (used.equals("cluster") ? " (Hopper thread-block cluster; compile-checked only until verified on a GPU)" : " (portable multi-pass)")
                + " [setting " + kernel() + ", -D" + KERNEL_PROPERTY + " / AD_CUDA_KERNEL]");
    }

    /** The library loaded and the driver reports at least one GPU. */
    public static boolean available() { return Holder.PROBLEM == null; }

    /** The library loaded (it may still see no GPU). */
    public static boolean libraryLoaded() { return Holder.FDL != null; }

    public static String problem() { return Holder.PROBLEM; }

    public static String libraryPath() { return Holder.LIB.path() == null ? null : Holder.LIB.path().toString(); }

    public static int deviceCount() { return Holder.DEVICES; }

    private static void check(int rc, String what) {
        if (rc != 0) throw new CudaException(what + " failed (" + ProblemStruct.codeName(rc) + "): " + lastError());
    }

    private static RuntimeException wrap(Throwable t) { return NativeCpu.rethrow(t); }

    public static String lastError() {
        try {
            MemorySegment p = (MemorySegment) Holder.LAST_ERROR.invokeExact();
            return p.equals(MemorySegment.NULL) ? "" : p.reinterpret(4096).getString(0);
        } catch (Throwable t) {
            throw wrap(t);
        }
    }

    public static String deviceName(int device) {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment buf = a.allocate(256);
            check((int) Holder.NAME.invokeExact(device, buf, 256L), "cudaGetDeviceProperties");
            return buf.getString(0);
        } catch (CudaException e) {
            throw e;
        } catch (Throwable t) {
            throw wrap(t);
        }
    }

    /** [cc major, cc minor, SMs, global memory bytes, L2 bytes, driver version, runtime version]. */
    public static long[] deviceInfo(int device) {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment buf = a.allocate(ValueLayout.JAVA_LONG, 8);
            check((int) Holder.INFO.invokeExact(device, buf), "cudaGetDeviceProperties");
            return buf.asSlice(0, 7 * 8).toArray(ValueLayout.JAVA_LONG);
        } catch (CudaException e) {
            throw e;
        } catch (Throwable t) {
            throw wrap(t);
        }
    }

    /** cudaMalloc: a device segment of {@code bytes} bytes (its address is a device pointer: never dereference it from Java). */
    public static MemorySegment malloc(long bytes) {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment out = a.allocate(ValueLayout.ADDRESS);
            check((int) Holder.MALLOC.invokeExact(out, bytes), "cudaMalloc(" + bytes + ")");
            return MemorySegment.ofAddress(out.get(ValueLayout.JAVA_LONG, 0)).reinterpret(bytes);
        } catch (CudaException e) {
            throw e;
        } catch (Throwable t) {
            throw wrap(t);
        }
    }

    public static void free(MemorySegment device) {
        try {
            check((int) Holder.FREE.invokeExact(MemorySegment.ofAddress(device.address())), "cudaFree");
        } catch (CudaException e) {
            throw e;
        } catch (Throwable t) {
            throw wrap(t);
        }
    }

    /** Host to device copy, complete when this returns. {@code host} must be native memory. */
    public static void copyToDevice(MemorySegment device, MemorySegment host, long bytes, long stream) {
        try {
            check((int) Holder.HTOD.invokeExact(MemorySegment.ofAddress(device.address()), host, bytes, MemorySegment.ofAddress(stream)), "cudaMemcpy HtoD");
        } catch (CudaException e) {
            throw e;
        } catch (Throwable t) {
            throw wrap(t);
        }
    }

    /** Device to host copy, complete when this returns. {@code host} must be native memory. */
    public static void copyToHost(MemorySegment host, MemorySegment device, long bytes, long stream) {
        try {
            check((int) Holder.DTOH.invokeExact(host, MemorySegment.ofAddress(device.address()), bytes, MemorySegment.ofAddress(stream)), "cudaMemcpy DtoH");
        } catch (CudaException e) {
            throw e;
        } catch (Throwable t) {
            throw wrap(t);
        }
    }

    /** Device to device copy, asynchronous on the stream. */
    public static void copyDeviceToDevice(MemorySegment dst, MemorySegment src, long bytes, long stream) {
        try {
            check((int) Holder.DTOD.invokeExact(MemorySegment.ofAddress(dst.address()), MemorySegment.ofAddress(src.address()), bytes, MemorySegment.ofAddress(stream)), "cudaMemcpyAsync DtoD");
        } catch (CudaException e) {
            throw e;
        } catch (Throwable t) {
            throw wrap(t);
        }
    }

    public static void memset(MemorySegment device, int value, long bytes, long stream) {
        try {
            check((int) Holder.MEMSET.invokeExact(MemorySegment.ofAddress(device.address()), value, bytes, MemorySegment.ofAddress(stream)), "cudaMemsetAsync");
        } catch (CudaException e) {
            throw e;
        } catch (Throwable t) {
            throw wrap(t);
        }
    }

    public static long streamCreate() { return handleOut(Holder.STREAM_CREATE, "cudaStreamCreate"); }

    public static void streamDestroy(long stream) { voidCall(Holder.STREAM_DESTROY, stream, "cudaStreamDestroy"); }

    public static void streamSynchronize(long stream) { voidCall(Holder.STREAM_SYNC, stream, "cudaStreamSynchronize"); }

    public static long eventCreate() { return handleOut(Holder.EVENT_CREATE, "cudaEventCreate"); }

    public static void eventDestroy(long event) { voidCall(Holder.EVENT_DESTROY, event, "cudaEventDestroy"); }

    public static void eventRecord(long event, long stream) {
        try {
            check((int) Holder.EVENT_RECORD.invokeExact(MemorySegment.ofAddress(event), MemorySegment.ofAddress(stream)), "cudaEventRecord");
        } catch (CudaException e) {
            throw e;
        } catch (Throwable t) {
            throw wrap(t);
        }
    }

    /** Milliseconds between two recorded events (waits for {@code end}). */
    public static float eventElapsedMs(long start, long end) {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment out = a.allocate(ValueLayout.JAVA_FLOAT);
            check((int) Holder.EVENT_ELAPSED.invokeExact(MemorySegment.ofAddress(start), MemorySegment.ofAddress(end), out), "cudaEventElapsedTime");
            return out.get(ValueLayout.JAVA_FLOAT, 0);
        } catch (CudaException e) {
            throw e;
        } catch (Throwable t) {
            throw wrap(t);
        }
    }

    /** Opens an NVTX range; {@code name} must be a NUL-terminated native string (pre-encode it once). */
    public static void nvtxPush(MemorySegment name) {
        if (Holder.NVTX_PUSH == null) return;
        try {
            int ignored = (int) Holder.NVTX_PUSH.invokeExact(name);
        } catch (Throwable t) {
            throw wrap(t);
        }
    }

    public static void nvtxPop() {
        if (Holder.NVTX_POP == null) return;
        try {
            int ignored = (int) Holder.NVTX_POP.invokeExact();
        } catch (Throwable t) {
            throw wrap(t);
        }
    }

    public static void profilerStart() {
        try {
            check((int) Holder.PROF_START.invokeExact(), "cudaProfilerStart");
        } catch (CudaException e) {
            throw e;
        } catch (Throwable t) {
            throw wrap(t);
        }
    }

    public static void profilerStop() {
        try {
            check((int) Holder.PROF_STOP.invokeExact(), "cudaProfilerStop");
        } catch (CudaException e) {
            throw e;
        } catch (Throwable t) {
            throw wrap(t);
        }
    }

    static long workspaceBytes(MemorySegment problem, MemorySegment out) {
        try {
            check((int) Holder.WS.invokeExact(problem, out), "ad_fdl_cuda_workspace_bytes");
            return out.get(ValueLayout.JAVA_LONG, 0);
        } catch (CudaException e) {
            throw e;
        } catch (Throwable t) {
            throw wrap(t);
        }
    }

    static int fdl(MemorySegment problem, long workspace, long workspaceBytes, long dLoss, long dStatus, long stream) {
        try {
            return (int) Holder.FDL.invokeExact(problem, workspace, workspaceBytes, dLoss, dStatus, stream);
        } catch (Throwable t) {
            throw wrap(t);
        }
    }

    private static long handleOut(MethodHandle h, String what) {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment out = a.allocate(ValueLayout.ADDRESS);
            check((int) h.invokeExact(out), what);
            return out.get(ValueLayout.JAVA_LONG, 0);
        } catch (CudaException e) {
            throw e;
        } catch (Throwable t) {
            throw wrap(t);
        }
    }

    private static void voidCall(MethodHandle h, long handle, String what) {
        try {
            check((int) h.invokeExact(MemorySegment.ofAddress(handle)), what);
        } catch (CudaException e) {
            throw e;
        } catch (Throwable t) {
            throw wrap(t);
        }
    }
}
