package ai.aligndistil.pipeline.config;

/**
 * A pipeline failure meant for the user as one line: either a usage problem (a bad or missing option, a config
 * file that names an unknown key; the command line exits 2) or a failure while running (exit 1). The pipeline
 * never exits the process itself; the command layer maps {@link #usage()} to the exit code.
 */
public final class PipelineException extends RuntimeException {
    private static final long serialVersionUID = 1L;
    private final boolean usage;
    private final int exitCode;

    private PipelineException(boolean usage, String message) {
        this(usage, message, usage ? 2 : 1);
    }

    private PipelineException(boolean usage, String message, int exitCode) {
        super(message);
        this.usage = usage;
        this.exitCode = exitCode;
    }

    /** A problem with what the user asked for (exit code 2 on the command line). */
    public static PipelineException usage(String message) { return new PipelineException(true, message); }

    /** A failure while running (exit code 1 on the command line). */
    public static PipelineException failure(String message) { return new PipelineException(false, message); }

    /**
     * A run stopped on request (SIGTERM, SIGINT) after saving its state: the message says where and how to resume;
     * the command line exits with {@code exitCode} (128 + the signal: 143 for SIGTERM, 130 for SIGINT).
     */
    public static PipelineException stopped(String message, int exitCode) { return new PipelineException(false, message, exitCode); }

    /** The command line's exit status: 2 for a usage problem, 1 for a failure, 128 + signal for a stop on request. */
    public int exitCode() { return exitCode; }

    /** True for a usage problem, false for a failure while running. */
    public boolean usage() { return usage; }
}
