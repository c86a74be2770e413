package ai.aligndistil.io;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.concurrent.ThreadLocalRandom;

/**
 * Atomic file replacement: write a temporary file in the target's folder, fsync it, rename it over the target,
 * fsync the folder. A crash at any point leaves either the old file or the complete new one under the name,
 * never a half-written file; a failed write leaves no temporary file behind.
 */
public final class AtomicFiles {
    private AtomicFiles() {}

    /** Writes the body of a file through a channel. */
    @FunctionalInterface
    public interface Body {
        void write(FileChannel ch) throws IOException;
    }

    public static void write(Path target, Body body) throws IOException {
        Path dir = target.toAbsolutePath().getParent();
        Files.createDirectories(dir);
        Path tmp = dir.resolve("." + target.getFileName() + ".tmp-" + ProcessHandle.current().pid() + "-"
                + Long.toHexString(ThreadLocalRandom.current().nextLong()));
        boolean done = false;
        try {
            try (FileChannel ch = FileChannel.open(tmp, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE)) {
                body.write(ch);
                ch.force(true);
            }
            try {
                Files.move(tmp, target, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
            } catch (AtomicMoveNotSupportedException e) {
                Files.move(tmp, target, StandardCopyOption.REPLACE_EXISTING);
            }
            fsyncDirectory(dir);
            done = true;
        } finally {
            if (!done) {
                try {
                    Files.deleteIfExists(tmp);
                } catch (IOException e) {
                    // the write's own error is the one to report; a temporary file that cannot be removed stays hidden (dot name)
                }
            }
        }
    }

    /**
     * The operating system's words for a failed file operation ("No space left on device", "File too large",
     * "Permission denied"), without the path that {@link java.nio.file.FileSystemException} puts in its message.
     */
    public static String osError(IOException e) {
        if (e instanceof java.nio.file.FileSystemException f) {
            if (f.getReason() != null) return f.getReason();
            return switch (f) {
                case java.nio.file.AccessDeniedException a -> "Permission denied";
                case java.nio.file.NoSuchFileException n -> "No such file or directory";
                case java.nio.file.FileAlreadyExistsException x -> "File exists";
                case java.nio.file.NotDirectoryException x -> "Not a directory";
                default -> f.getClass().getSimpleName();
            };
        }
        return e.getMessage() == null ? e.getClass().getSimpleName() : e.getMessage();
    }

    public static void writeString(Path target, String text) throws IOException {
        byte[] bytes = text.getBytes(StandardCharsets.UTF_8);
        write(target, ch -> writeFully(ch, ByteBuffer.wrap(bytes)));
    }

    public static void writeFully(FileChannel ch, ByteBuffer b) throws IOException {
        while (b.hasRemaining()) ch.write(b);
    }

    /** Best-effort fsync of a directory so a rename is durable (not supported on every file system). */
    public static void fsyncDirectory(Path dir) {
        try (FileChannel ch = FileChannel.open(dir, StandardOpenOption.READ)) {
            ch.force(true);
        } catch (IOException | UnsupportedOperationException ignored) {
            // Directories cannot be opened for sync on some platforms; the rename itself is still atomic.
        }
    }
}
