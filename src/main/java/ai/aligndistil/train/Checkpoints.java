package ai.aligndistil.train;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import org.bytedeco.pytorch.Tensor;

import ai.aligndistil.io.AtomicFiles;

/**
 * The rotating checkpoints of one run folder: {@code checkpoint-<step>.safetensors} (step zero-padded to six
 * digits), the newest {@code keep} kept. Resuming takes the newest readable one: a damaged or unreadable newer
 * file is reported in one line naming both files and renamed {@code <name>.unreadable} (kept as evidence, out of
 * the rotation); when none is readable the caller gets every file's reason. A single {@code checkpoint.safetensors}
 * written by earlier versions is still found (as the oldest candidate) and removed with the others.
 */
public final class Checkpoints {
    private Checkpoints() {}

    /** The name earlier versions used for their single checkpoint. */
    public static final String LEGACY = "checkpoint.safetensors";
    private static final Pattern NAME = Pattern.compile("checkpoint-(\\d+)\\.safetensors");

    /** The file of the checkpoint of {@code step} in {@code dir}. */
    public static Path file(Path dir, long step) {
        return dir.resolve(String.format("checkpoint-%06d.safetensors", step));
    }

    /** The checkpoints of {@code dir}, newest first (by step; the legacy single file last). */
    public static List<Path> list(Path dir) throws IOException {
        List<Path> named = new ArrayList<>();
        if (!Files.isDirectory(dir)) return named;
        try (DirectoryStream<Path> ds = Files.newDirectoryStream(dir, "checkpoint-*.safetensors")) {
            for (Path p : ds) if (NAME.matcher(p.getFileName().toString()).matches()) named.add(p);
        }
        named.sort(Comparator.comparingLong(Checkpoints::stepOf).reversed());
        Path legacy = dir.resolve(LEGACY);
        if (Files.exists(legacy)) named.add(legacy);
        return named;
    }

    /** The step in a rotating checkpoint's name, or -1 for another file. */
    public static long stepOf(Path p) {
        Matcher m = NAME.matcher(p.getFileName().toString());
        return m.matches() ? Long.parseLong(m.group(1)) : -1;
    }

    /** Deletes all but the newest {@code keep} checkpoints. */
    public static void prune(Path dir, int keep) throws IOException {
        List<Path> all = list(dir);
        for (int i = keep; i < all.size(); i++) Files.deleteIfExists(all.get(i));
    }

    /** Deletes every checkpoint of {@code dir} (not the {@code .unreadable} ones). */
    public static void deleteAll(Path dir) throws IOException {
        for (Path p : list(dir)) Files.deleteIfExists(p);
    }

    /** A checkpoint that was loaded, and where from. */
    public record Loaded(Path file, TrainCheckpoint.State state) {}

    /**
     * Loads the newest readable checkpoint of {@code dir} into the live model and optimiser; null when there is none.
     * Each unreadable newer one is reported on {@code err} in one line naming it and the one used instead.
     *
     * @throws NoneReadableException when there are checkpoints and none of them is readable (message: each file's reason)
     */
    public static Loaded loadNewestReadable(Path dir, Map<String, Tensor> model, AdamW optimizer, String who, PrintStream err) throws IOException {
        List<Path> all = list(dir);
        if (all.isEmpty()) return null;
        List<String> reasons = new ArrayList<>();
        List<Path> bad = new ArrayList<>();
        for (Path p : all) {
            TrainCheckpoint.State st;
            try {
                st = TrainCheckpoint.load(p, model, optimizer);
            } catch (IOException | RuntimeException e) {
                reasons.add(p.getFileName() + ": " + reason(p, e));
                bad.add(p);
                continue;
            }
            for (int i = 0; i < bad.size(); i++) {
                Path b = bad.get(i), kept = b.resolveSibling(b.getFileName() + ".unreadable");
                Files.move(b, kept, StandardCopyOption.REPLACE_EXISTING);
                err.println(who + ": warning: the checkpoint " + b + " is unreadable (" + reasons.get(i).substring(b.getFileName().toString().length() + 2)
                        + "); resuming from the previous one, " + p + " (the unreadable file is kept as " + kept.getFileName() + ")");
            }
            return new Loaded(p, st);
        }
        throw new NoneReadableException(dir + ": no readable checkpoint (" + String.join("; ", reasons) + ")");
    }

    private static String reason(Path p, Exception e) {
        String m = e instanceof IOException io ? AtomicFiles.osError(io) : e.getClass().getSimpleName() + ": " + e.getMessage();
        if (m == null) m = e.getClass().getSimpleName();
        String prefix = p + ": ";
        return m.startsWith(prefix) ? m.substring(prefix.length()) : m;
    }

    /** Every checkpoint of a folder is unreadable. */
    public static final class NoneReadableException extends IOException {
        private static final long serialVersionUID = 1L;
        public NoneReadableException(String message) { super(message); }
    }
}
