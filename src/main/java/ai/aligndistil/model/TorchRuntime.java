package ai.aligndistil.model;

import java.io.File;
import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;
import java.util.Optional;

import org.bytedeco.javacpp.Loader;
import org.bytedeco.pytorch.global.torch;

/**
 * The one place that brings libtorch up: call {@link #init()} before any other torch use.
 *
 * <p>It (1) pre-extracts the whole natives folder of the presets into the JavaCPP cache before loading,
 * so a cold cache never lets the dynamic linker pick a system libtorch (libtorch-presets.md, gotcha 4);
 * (2) loads libtorch; (3) sizes the thread pools so small machines are not oversubscribed (gotcha 3):
 * torch intra-op threads via {@code set_num_threads} and OpenBLAS via {@code openblas_set_num_threads}
 * called through FFM; (4) logs one line. Later calls return at once.
 *
 * <p>It also lifts JavaCPP's {@code maxPhysicalBytes} guard (by default four times {@code -Xmx}; exceeding it throws
 * {@code OutOfMemoryError: Physical memory usage is too high} even though a model's weights and activations
 * legitimately live outside the Java heap) by setting {@code org.bytedeco.javacpp.maxPhysicalBytes=0} unless the
 * property is already set. This only works when {@link #init()} runs before the first JavaCPP {@code Pointer}
 * is created ({@link HfCheckpoint#load} and the logits command make sure of that); launchers should pass
 * {@code -Dorg.bytedeco.javacpp.maxPhysicalBytes=0} themselves to be safe. Memory stays bounded by the
 * one-{@code PointerScope}-per-step discipline instead.
 *
 * <p>Knob: the thread count is, in order of precedence, the system property {@code aligndistil.threads},
 * the environment variable {@code ALIGNDISTIL_THREADS}, {@code OMP_NUM_THREADS}, else the number of
 * available processors.
 */
@SuppressWarnings("restricted")
public final class TorchRuntime {
    private static final org.slf4j.Logger LOG = org.slf4j.LoggerFactory.getLogger(TorchRuntime.class);
    private static volatile boolean started;
    private static int threads;
    private static File[] extracted = new File[0];

    private TorchRuntime() {}

    /** Loads libtorch and sets the thread pools (idempotent, thread-safe). */
    public static void init() {
        if (started) return;
        synchronized (TorchRuntime.class) {
            if (started) return;
            if (System.getProperty("org.bytedeco.javacpp.maxPhysicalBytes") == null)
                System.setProperty("org.bytedeco.javacpp.maxPhysicalBytes", "0");
            long t0 = System.nanoTime();
            try {
                // The GPU build's folder when its jar is on the class path (the Loader prefers it by itself), else the CPU one.
                String folder = "/org/bytedeco/pytorch/" + Loader.getPlatform() + (Devices.gpuBuildOnClassPath() ? "-gpu" : "") + "/";
                File[] files = Loader.cacheResources(torch.class, folder);
                extracted = files == null ? new File[0] : files;
            } catch (Exception e) {
                throw new IllegalStateException("cannot extract the libtorch natives: " + e.getMessage(), e);
            }
            Loader.load(torch.class);
            threads = configuredThreads();
            torch.set_num_threads(threads);
            boolean blas = setOpenBlasThreads(threads);
            LOG.info(String.format("libtorch loaded in %.2f s; %d intra-op thread(s); OpenBLAS threads %s",
                    (System.nanoTime() - t0) / 1e9, threads, blas ? "set to " + threads : "left to OPENBLAS_NUM_THREADS"));
            started = true;
        }
    }

    /**
     * A file of the extracted natives folder by name (for example {@code libtorch_cuda.so}), searched under what
     * {@link #init()} extracted; null if absent. Used to read why a library does not load ({@link Devices}).
     */
    static File nativeFile(String name) {
        for (File f : extracted) {
            File hit = find(f, name, 3);
            if (hit != null) return hit;
        }
        return null;
    }

    private static File find(File f, String name, int depth) {
        if (f.isFile()) return f.getName().equals(name) ? f : null;
        File direct = new File(f, name);
        if (direct.isFile()) return direct;
        if (depth == 0) return null;
        File[] kids = f.listFiles();
        if (kids != null) for (File k : kids) if (k.isDirectory()) {
            File hit = find(k, name, depth - 1);
            if (hit != null) return hit;
        }
        return null;
    }

    /** The intra-op thread count chosen by {@link #init()}. */
    public static int threads() {
        init();
        return threads;
    }

    static int configuredThreads() {
        String[] sources = {System.getProperty("aligndistil.threads"), System.getenv("ALIGNDISTIL_THREADS"), System.getenv("OMP_NUM_THREADS")};
        for (String s : sources) {
            if (s == null || s.isBlank()) continue;
            try {
                int n = Integer.parseInt(s.trim());
                if (n > 0) return n;
            } catch (NumberFormatException ignored) {
                // fall through to the next source
            }
        }
        return Runtime.getRuntime().availableProcessors();
    }

    /** Sets the thread count of every OpenBLAS copy the presets loaded (there are two); true if any. */
    private static boolean setOpenBlasThreads(int n) {
        boolean any = false;
        for (String lib : new String[] {"libopenblas.so.0", "libopenblas_nolapack.so.0"}) {
            try {
                SymbolLookup lookup = SymbolLookup.libraryLookup(lib, Arena.global());
                Optional<MemorySegment> f = lookup.find("openblas_set_num_threads");
                if (f.isEmpty()) continue;
                MethodHandle h = Linker.nativeLinker().downcallHandle(f.get(), FunctionDescriptor.ofVoid(ValueLayout.JAVA_INT));
                h.invokeExact(n);
                any = true;
            } catch (Throwable ignored) {
                // library not loadable under this name: try the next one
            }
        }
        return any;
    }
}
