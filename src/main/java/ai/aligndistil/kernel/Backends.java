package ai.aligndistil.kernel;

import java.lang.System.Logger.Level;
import java.util.EnumSet;
import java.util.Locale;
import java.util.Set;

/**
 * Chooses the backend once and logs the choice once. Knobs (system properties):
 * <ul>
 *   <li>{@code aligndistil.backend} = auto (default) | reference | cpu | cuda: the host default;
 *       auto takes the native CPU library when it loads, else the Java reference (with a warning that says why).</li>
 *   <li>{@code aligndistil.cpu.threads} = N (default 0 = every online CPU): the CPU library's worker pool.</li>
 *   <li>{@code aligndistil.cpu.rowDesign} = auto | caching | recomputing (default: unset = the environment variable
 *       AD_CPU_ROW_DESIGN, else auto): the CPU kernel's row design; see {@link NativeCpu#forceRowDesign}.</li>
 *   <li>{@code aligndistil.cuda.kernel} = auto | multipass | cluster (default: unset = the environment variable
 *       AD_CUDA_KERNEL, else auto): the CUDA row kernel; see {@link NativeCuda}.</li>
 *   <li>{@code aligndistil.native.dir}, {@code aligndistil.cache.dir}: see {@link NativeLibraries}.</li>
 * </ul>
 */
public final class Backends {
    private Backends() {}

    static final System.Logger LOG = System.getLogger("ai.aligndistil");
    private static final Set<Backend> LOGGED = EnumSet.noneOf(Backend.class);
    private static volatile boolean cpuConfigured;

    /** The backend for host memory, from {@code aligndistil.backend} or automatically. */
    public static Backend hostDefault() {
        String prop = System.getProperty("aligndistil.backend", "auto").trim().toLowerCase(Locale.ROOT);
        if (!prop.equals("auto") && !prop.isEmpty()) {
            Backend b = Backend.parse(prop);
            require(b);
            logOnce(b, "set by -Daligndistil.backend=" + prop);
            return b;
        }
        if (NativeCpu.available()) {
            configureCpu();
            logOnce(Backend.CPU, "auto");
            return Backend.CPU;
        }
        synchronized (LOGGED) {
            if (LOGGED.add(Backend.REFERENCE))
                LOG.log(Level.WARNING, "aligndistil: backend reference (the slow Java double-precision loops), because the native CPU library is unavailable: "
                        + NativeCpu.problem() + ". Build with `mvn package` (CMake and a C compiler) to get it.");
        }
        return Backend.REFERENCE;
    }

    /** Throws {@link IllegalStateException} with the reason when {@code b} cannot run here. */
    public static void require(Backend b) {
        switch (b) {
            case REFERENCE -> { }
            case CPU -> {
                if (!NativeCpu.available()) throw new IllegalStateException("the cpu backend is unavailable: " + NativeCpu.problem());
                configureCpu();
            }
            case CUDA -> {
                if (!NativeCuda.available()) throw new IllegalStateException("the cuda backend is unavailable: " + NativeCuda.problem());
            }
        }
    }

    /** Whether {@code b} can run here. */
    public static boolean available(Backend b) {
        return switch (b) {
            case REFERENCE -> true;
            case CPU -> NativeCpu.available();
            case CUDA -> NativeCuda.available();
        };
    }

    private static void configureCpu() {
        if (cpuConfigured) return;
        synchronized (Backends.class) {
            if (cpuConfigured) return;
            int n = Integer.getInteger("aligndistil.cpu.threads", 0);
            NativeCpu.setThreads(n);
            String design = System.getProperty("aligndistil.cpu.rowDesign");
            if (design != null && !design.isBlank()) NativeCpu.forceRowDesign(design.trim().toLowerCase(Locale.ROOT));
            cpuConfigured = true;
        }
    }

    /** One line describing a backend as it is on this machine. */
    public static String describe(Backend b) {
        return switch (b) {
            case REFERENCE -> "reference (Java, double precision)";
            case CPU -> NativeCpu.available()
                    ? "cpu (" + NativeCpu.libraryPath() + ", " + NativeCpu.isa() + " code path, " + NativeCpu.threads() + " threads)"
                    : "cpu unavailable: " + NativeCpu.problem();
            case CUDA -> NativeCuda.available()
                    ? "cuda (" + NativeCuda.libraryPath() + ", " + NativeCuda.deviceName(0) + ", " + NativeCuda.deviceCount() + " device(s))"
                    : "cuda unavailable: " + NativeCuda.problem();
        };
    }

    static void logOnce(Backend b, String why) {
        synchronized (LOGGED) {
            if (!LOGGED.add(b)) return;
        }
        LOG.log(Level.INFO, "aligndistil: backend " + describe(b) + " [" + why + "]");
    }
}
