package ai.aligndistil.cli;

/** A failure the CLI reports as one line on stderr (no stack trace) with an exit code. */
public final class CliException extends RuntimeException {
    private static final long serialVersionUID = 1L;
    public static final int USAGE = 2;
    public static final int FAILURE = 1;

    private final int exitCode;

    public CliException(int exitCode, String message) {
        super(message);
        this.exitCode = exitCode;
    }

    public static CliException usage(String message) { return new CliException(USAGE, message); }

    public static CliException failure(String message) { return new CliException(FAILURE, message); }

    public int exitCode() { return exitCode; }
}
