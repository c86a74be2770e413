package ai.aligndistil.kernel;

import java.io.IOException;
import java.io.InputStream;
import java.lang.foreign.Arena;
import java.lang.foreign.SymbolLookup;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HexFormat;
import java.util.Locale;
import java.util.concurrent.ConcurrentHashMap;

/**
 * Finds and loads the project's native libraries (libaligndistil_cpu.so, libaligndistil_cuda.so).
 *
 * <p>Order, per library:
 * <ol>
 *   <li>{@code -Daligndistil.native.dir=DIR}: DIR/libNAME.so, as it is (for development and profiling);</li>
 *   <li>the jar resource {@code /native/<os>-<arch>/libNAME.so}, extracted once to a versioned cache folder
 *       {@code ${aligndistil.cache.dir:-~/.cache/aligndistil}/native-<sha256 prefix>/} (a stable path, so
 *       Nsight source correlation and repeated runs see the same file; concurrent JVMs extract safely);</li>
 *   <li>otherwise the library is unavailable, with the reason kept for the log line and {@code diagnose}.</li>
 * </ol>
 * Libraries are opened with {@link SymbolLookup#libraryLookup(Path, Arena)} in the global arena (never
 * unloaded). Nothing here depends on the PyTorch presets.
 */
public final class NativeLibraries {
    private NativeLibraries() {}

    /** A loaded library, or why it is not there. */
    public record Loaded(String name, SymbolLookup lookup, Path path, String problem) {
        public boolean ok() { return lookup != null; }
    }

    private static final ConcurrentHashMap<String, Loaded> CACHE = new ConcurrentHashMap<>();

    public static String platform() {
        String os = System.getProperty("os.name", "").toLowerCase(Locale.ROOT);
        String arch = System.getProperty("os.arch", "").toLowerCase(Locale.ROOT);
        String o = os.contains("linux") ? "linux" : os.contains("mac") ? "macosx" : os.contains("win") ? "windows" : os;
        String a = switch (arch) {
            case "amd64", "x86_64" -> "x86_64";
            case "aarch64", "arm64" -> "arm64";
            default -> arch;
        };
        return o + "-" + a;
    }

    /** Loads {@code libNAME.so} (NAME = "aligndistil_cpu" or "aligndistil_cuda"), once per process. */
    public static Loaded load(String name) {
        return CACHE.computeIfAbsent(name, NativeLibraries::doLoad);
    }

    private static Loaded doLoad(String name) {
        String file = System.mapLibraryName(name);
        String dir = System.getProperty("aligndistil.native.dir");
        Path path;
        if (dir != null && !dir.isBlank()) {
            path = Path.of(dir).resolve(file);
            if (!Files.isRegularFile(path)) return new Loaded(name, null, path, "not found at " + path + " (aligndistil.native.dir)");
        } else {
            String resource = "/native/" + platform() + "/" + file;
            try (InputStream in = NativeLibraries.class.getResourceAsStream(resource)) {
                if (in == null) return new Loaded(name, null, null, "not packed in this build (no resource " + resource + ")");
                path = extract(file, in.readAllBytes());
            } catch (IOException e) {
                return new Loaded(name, null, null, "could not extract " + resource + ": " + e.getMessage());
            }
        }
        try {
            SymbolLookup lookup = SymbolLookup.libraryLookup(path, Arena.global());
            return new Loaded(name, lookup, path, null);
        } catch (IllegalArgumentException | IllegalCallerException e) {
            return new Loaded(name, null, path, "could not be opened: " + e.getMessage());
        }
    }

    private static Path extract(String file, byte[] bytes) throws IOException {
        String hash;
        try {
            hash = HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(bytes)).substring(0, 16);
        } catch (NoSuchAlgorithmException e) {
            throw new IOException(e);
        }
        Path root = cacheDir().resolve("native-" + hash);
        Path target = root.resolve(file);
        if (Files.isRegularFile(target) && Files.size(target) == bytes.length) return target;
        Files.createDirectories(root);
        Path tmp = Files.createTempFile(root, file, ".tmp");
        try {
            Files.write(tmp, bytes);
            try {
                Files.move(tmp, target, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
            } catch (AtomicMoveNotSupportedException e) {
                Files.move(tmp, target, StandardCopyOption.REPLACE_EXISTING);
            }
        } finally {
            Files.deleteIfExists(tmp);
        }
        return target;
    }

    /** {@code -Daligndistil.cache.dir}, else $XDG_CACHE_HOME/aligndistil, else ~/.cache/aligndistil. */
    public static Path cacheDir() {
        String p = System.getProperty("aligndistil.cache.dir");
        if (p != null && !p.isBlank()) return Path.of(p);
        String xdg = System.getenv("XDG_CACHE_HOME");
        if (xdg != null && !xdg.isBlank()) return Path.of(xdg, "aligndistil");
        return Path.of(System.getProperty("user.home"), ".cache", "aligndistil");
    }
}
