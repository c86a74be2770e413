package ai.aligndistil.train.dist;

/**
 * A data-parallel job that cannot start or cannot go on. {@link #usage()} marks a configuration the user must
 * change (a port in use, ranks started differently, a bad environment: exit code 2); otherwise a failure while
 * running (a rank gone, a collective past its timeout: exit code 1). The message is one line that names the rank.
 */
public final class DistException extends RuntimeException {
    private final boolean usage;

    private DistException(String message, boolean usage, Throwable cause) {
        super(message, cause);
        this.usage = usage;
    }

    public static DistException usage(String message) { return new DistException(message, true, null); }

    public static DistException failure(String message, Throwable cause) { return new DistException(message, false, cause); }

    public boolean usage() { return usage; }
}
