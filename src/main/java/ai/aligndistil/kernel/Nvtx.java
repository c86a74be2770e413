package ai.aligndistil.kernel;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.charset.StandardCharsets;
import java.lang.System.Logger.Level;

/**
 * NVTX ranges and CUDA profiler control from Java, for Nsight Systems and Nsight Compute (docs/profiling.md).
 *
 * <p>Backed by {@code ad_nvtx_push/pop} and {@code ad_cuda_profiler_start/stop} of libaligndistil_cuda (NVTX v3,
 * header-only: a push or pop costs a few instructions when no tool is attached). Ranges are declared once, as
 * constants, with {@link #range(String)}: the name is encoded to a NUL-terminated native string in a static arena
 * there, so opening and closing a range on the hot path allocates nothing:
 *
 * <pre>{@code
 * static final Nvtx.Range LOSS = Nvtx.range("distill/loss");
 * try (Nvtx.Range _ = LOSS.open()) { ... }          // or LOSS.push(); try { ... } finally { Nvtx.pop(); }
 * }</pre>
 *
 * <p>A {@link Range} holds no state beyond its name, so one constant serves every thread (NVTX keeps one range
 * stack per thread). When the CUDA library is absent, or {@code -Daligndistil.nvtx=false}, every call is a branch
 * on a {@code static final} flag that the JIT folds away; nothing is loaded.
 *
 * <p>System property {@value #PROPERTY}: {@code auto} (default: on when libaligndistil_cuda loads, GPU or not,
 * since Nsight Systems records NVTX ranges of CPU-only runs too), {@code true} (same as auto, but logs a warning
 * when the library is missing), {@code false} (off; the CUDA library is not even loaded for it).
 */
public final class Nvtx {
    private Nvtx() {}

    /** The system property that turns the ranges on or off: {@code auto} (default), {@code true}, {@code false}. */
    public static final String PROPERTY = "aligndistil.nvtx";

    private static final System.Logger LOG = System.getLogger("ai.aligndistil");
    private static final String STATUS;
    private static final boolean ENABLED;

    static {
        String p = System.getProperty(PROPERTY, "auto").trim().toLowerCase(java.util.Locale.ROOT);
        boolean on;
        String why;
        switch (p) {
            case "false", "off", "0" -> {
                on = false;
                why = "off (-D" + PROPERTY + "=" + p + ")";
            }
            case "auto", "", "true", "on", "1" -> {
                on = NativeCuda.libraryLoaded();
                why = on ? "on (libaligndistil_cuda loaded from " + NativeCuda.libraryPath() + ")"
                        : "off (libaligndistil_cuda unavailable: " + NativeCuda.problem() + ")";
                if (!on && !p.equals("auto") && !p.isEmpty()) LOG.log(Level.WARNING, "aligndistil: -D" + PROPERTY + "=" + p + " but NVTX is " + why);
            }
            default -> {
                on = false;
                why = "off (unrecognised -D" + PROPERTY + "=" + p + "; use auto, true or false)";
                LOG.log(Level.WARNING, "aligndistil: NVTX " + why);
            }
        }
        ENABLED = on;
        STATUS = why;
    }

    /** Whether ranges reach NVTX (the CUDA library loaded and the property allows it). */
    public static boolean enabled() { return ENABLED; }

    /** One line saying whether ranges are on and why (for {@code diagnose} and logs). */
    public static String status() { return STATUS; }

    /**
     * A named NVTX range: an immutable constant holding the name pre-encoded in native memory. {@link #open()}
     * pushes it and returns this object (for try-with-resources), {@link #close()} pops the innermost range of
     * the calling thread. Neither allocates.
     */
    public static final class Range implements AutoCloseable {
        private final String name;
        private final MemorySegment cName; // null when NVTX is off

        private Range(String name, MemorySegment cName) {
            this.name = name;
            this.cName = cName;
        }

        public String name() { return name; }

        /** Pushes the range on this thread's NVTX stack; returns this, to be closed by try-with-resources. */
        public Range open() {
            if (ENABLED) NativeCuda.nvtxPush(cName);
            return this;
        }

        /** Pushes the range; pair it with {@link Nvtx#pop()} on the same thread. */
        public void push() {
            if (ENABLED) NativeCuda.nvtxPush(cName);
        }

        /** Pops the innermost range of this thread (the one {@link #open()} pushed). */
        @Override
        public void close() {
            if (ENABLED) NativeCuda.nvtxPop();
        }

        @Override
        public String toString() { return "Nvtx.Range[" + name + "]"; }
    }

    /**
     * Declares a range. Call once per name (a {@code static final} field): each call encodes the name into
     * native memory that lives as long as the process. Names are 1 to 200 printable ASCII characters.
     */
    public static Range range(String name) {
        if (name == null || name.isEmpty() || name.length() > 200)
            throw new IllegalArgumentException("NVTX range name must be 1 to 200 characters, got " + (name == null ? "null" : "'" + name + "'"));
        for (int i = 0; i < name.length(); i++) {
            char c = name.charAt(i);
            if (c < 0x20 || c > 0x7e)
                throw new IllegalArgumentException("NVTX range name must be printable ASCII; '" + name + "' has character U+"
                        + String.format("%04X", (int) c) + " at index " + i);
        }
        if (!ENABLED) return new Range(name, null);
        byte[] b = name.getBytes(StandardCharsets.US_ASCII);
        MemorySegment s = Arena.global().allocate(b.length + 1L);
        MemorySegment.copy(b, 0, s, java.lang.foreign.ValueLayout.JAVA_BYTE, 0, b.length);
        s.set(java.lang.foreign.ValueLayout.JAVA_BYTE, b.length, (byte) 0);
        return new Range(name, s);
    }

    /** Pops the innermost range of this thread (pairs with {@link Range#push()}). */
    public static void pop() {
        if (ENABLED) NativeCuda.nvtxPop();
    }

    private static volatile boolean profilerWarned;

    /**
     * {@code cudaProfilerStart}: opens the capture window of {@code nsys profile --capture-range=cudaProfilerApi}
     * and {@code ncu --profile-from-start off}. Returns false, logging the reason once, when there is no CUDA
     * device or the call fails (never throws: profiling must not stop a training run). Independent of
     * {@value #PROPERTY}.
     */
    public static boolean profilerStart() { return profilerCall(true); }

    /** {@code cudaProfilerStop}: closes the capture window; same contract as {@link #profilerStart()}. */
    public static boolean profilerStop() { return profilerCall(false); }

    private static boolean profilerCall(boolean start) {
        String what = start ? "cudaProfilerStart" : "cudaProfilerStop";
        if (!NativeCuda.available()) {
            warnOnce("aligndistil: " + what + " skipped, no CUDA profiler can be attached: " + NativeCuda.problem()
                    + " (the steps chosen by --profile-step run unprofiled)");
            return false;
        }
        try {
            if (start) NativeCuda.profilerStart();
            else NativeCuda.profilerStop();
            return true;
        } catch (NativeCuda.CudaException e) {
            warnOnce("aligndistil: " + what + " failed (" + e.getMessage() + "); profiling window ignored");
            return false;
        }
    }

    private static void warnOnce(String msg) {
        if (profilerWarned) return;
        synchronized (Nvtx.class) {
            if (profilerWarned) return;
            profilerWarned = true;
        }
        LOG.log(Level.WARNING, msg);
    }

    /**
     * A hint for logs: whether an Nsight tool seems attached (it injects itself through
     * {@code CUDA_INJECTION64_PATH} or {@code NVTX_INJECTION64_PATH}). A heuristic, never used for decisions.
     */
    public static boolean toolLikelyAttached() {
        String a = System.getenv("CUDA_INJECTION64_PATH"), b = System.getenv("NVTX_INJECTION64_PATH");
        return (a != null && !a.isBlank()) || (b != null && !b.isBlank());
    }
}
