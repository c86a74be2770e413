package ai.aligndistil.kernel;

import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;

/**
 * FFM bindings of libaligndistil_cpu (hand-written; the C ABI is native/include/aligndistil.h). Loaded on
 * first use; {@link #available()} says whether it loaded and {@link #problem()} why not.
 */
public final class NativeCpu {
    private NativeCpu() {}

    private static final class Holder {
        static final NativeLibraries.Loaded LIB = NativeLibraries.load("aligndistil_cpu");
        static final MethodHandle FDL, ISA, FORCE_ISA, SET_THREADS, GET_THREADS, ABI, ROW_DESIGN, FORCE_ROW_DESIGN;
        static final String PROBLEM;

        static {
            MethodHandle fdl = null, isa = null, force = null, set = null, get = null, abi = null, design = null, forceDesign = null;
            String problem = LIB.problem();
            if (LIB.ok()) {
                try {
                    Linker l = Linker.nativeLinker();
                    SymbolLookup s = LIB.lookup();
                    abi = l.downcallHandle(find(s, "ad_abi_version"), FunctionDescriptor.of(ValueLayout.JAVA_INT));
                    // ad_fdl_cpu can run for seconds: not a critical downcall (GC must be able to proceed).
                    fdl = l.downcallHandle(find(s, "ad_fdl_cpu"),
                            FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.ADDRESS, ValueLayout.ADDRESS, ValueLayout.JAVA_INT));
                    isa = l.downcallHandle(find(s, "ad_cpu_isa"), FunctionDescriptor.of(ValueLayout.ADDRESS));
                    force = l.downcallHandle(find(s, "ad_cpu_force_isa"), FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.ADDRESS));
                    set = l.downcallHandle(find(s, "ad_cpu_set_threads"), FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.JAVA_INT));
                    get = l.downcallHandle(find(s, "ad_cpu_get_threads"), FunctionDescriptor.of(ValueLayout.JAVA_INT));
                    // the row-design switch (issue 15): optional, so that a library built before it still loads
                    var ds = s.find("ad_cpu_row_design");
                    var fds = s.find("ad_cpu_force_row_design");
                    if (ds.isPresent() && fds.isPresent()) {
                        design = l.downcallHandle(ds.get(), FunctionDescriptor.of(ValueLayout.ADDRESS));
                        forceDesign = l.downcallHandle(fds.get(), FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.ADDRESS));
                    }
                    int v = (int) abi.invokeExact();
                    if (v != 1) { problem = "ABI version " + v + ", this jar expects 1"; fdl = null; }
                } catch (Throwable t) {
                    problem = "symbol binding failed: " + t.getMessage();
                    fdl = null;
                }
            }
            FDL = fdl; ISA = isa; FORCE_ISA = force; SET_THREADS = set; GET_THREADS = get; ABI = abi;
            ROW_DESIGN = design; FORCE_ROW_DESIGN = forceDesign;
            PROBLEM = fdl == null ? problem : null;
        }

        private static MemorySegment find(SymbolLookup s, String name) {
            return s.find(name).orElseThrow(() -> new IllegalStateException("missing symbol " + name));
        }
    }

    public static boolean available() { return Holder.FDL != null; }

    /** Why the library is not available (null when it is). */
    public static String problem() { return Holder.PROBLEM; }

    public static String libraryPath() { return Holder.LIB.path() == null ? null : Holder.LIB.path().toString(); }

    static int fdl(MemorySegment problem, MemorySegment status, int threads) {
        try {
            return (int) Holder.FDL.invokeExact(problem, status, threads);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    /** "avx512", "avx2" or "portable": the code path this machine runs. */
    public static String isa() {
        try {
            MemorySegment p = (MemorySegment) Holder.ISA.invokeExact();
            return p.reinterpret(64).getString(0);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    /** Forces a code path for tests ("avx512", "avx2", "portable", or "auto"); false if this CPU cannot run it. */
    public static boolean forceIsa(String isa) {
        try (var arena = java.lang.foreign.Arena.ofConfined()) {
            int rc = (int) Holder.FORCE_ISA.invokeExact(arena.allocateFrom(isa));
            return rc == 0;
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    /**
     * The forced row design of the CPU kernel: "auto" (none forced: recomputing for f32 rows of at least 16,384 columns
     * on the AVX-512 path, caching elsewhere), "caching" or "recomputing"; null when the library predates the switch.
     */
    public static String rowDesign() {
        if (Holder.ROW_DESIGN == null) return null;
        try {
            MemorySegment p = (MemorySegment) Holder.ROW_DESIGN.invokeExact();
            return p.reinterpret(64).getString(0);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    /**
     * Forces the CPU kernel's row design ("caching", "recomputing", or "auto"; the two agree within the kernel's error
     * bounds, not bit for bit), for tests and benchmarks; also set by the environment variable AD_CPU_ROW_DESIGN or the
     * system property {@code aligndistil.cpu.rowDesign}. Not to be called while a loss runs.
     *
     * @throws IllegalArgumentException for another name
     * @throws UnsupportedOperationException when the loaded library has no such switch
     */
    public static void forceRowDesign(String design) {
        if (Holder.FORCE_ROW_DESIGN == null)
            throw new UnsupportedOperationException("this libaligndistil_cpu has no row-design switch: " + libraryPath());
        int rc;
        try (var arena = java.lang.foreign.Arena.ofConfined()) {
            rc = (int) Holder.FORCE_ROW_DESIGN.invokeExact(arena.allocateFrom(design));
        } catch (Throwable t) {
            throw rethrow(t);
        }
        if (rc != 0)
            throw new IllegalArgumentException("row design '" + design + "': expected auto, caching or recomputing");
    }

    /** Worker-pool size including the caller; n <= 0 = online CPUs. */
    public static int setThreads(int n) {
        try {
            return (int) Holder.SET_THREADS.invokeExact(n);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    public static int threads() {
        try {
            return (int) Holder.GET_THREADS.invokeExact();
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    static RuntimeException rethrow(Throwable t) {
        if (t instanceof RuntimeException r) return r;
        if (t instanceof Error e) throw e;
        return new IllegalStateException(t);
    }
}
