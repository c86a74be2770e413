package ai.aligndistil.pipeline.config;

/**
 * A pipeline failure meant for the user as one line: a usage problem (a bad or missing option, a config file that
 * names an unknown key; exit 2, with a pointer to --help), a refusal (a device that cannot be used, a run that will
 * not fit; exit 2, complete in one line), a failure while running (exit 1), or a stop on request after saving
 * (SIGTERM, SIGINT; exit 128 + the signal). The pipeline never exits the process itself; the command layer prints the
 * message and exits with {@link #exitCode()}.
 */
public final class PipelineException extends RuntimeException {
    private static final long serialVersionUID = 1L;
    private final boolean usage;
    private final boolean helpHint;
    private final int exitCode;

    private PipelineException(boolean usage, boolean helpHint, String message, int exitCode) {
        super(message);
        this.usage = usage;
        this.helpHint = helpHint;
        this.exitCode = exitCode;
    }

    /** A problem with what the user asked for (exit code 2 on the command line). */
    public static PipelineException usage(String message) { return new PipelineException(true, true, message, 2); }

    /**
     * A request that cannot be served on this machine (a device that cannot be used, a run that will not fit in its
     * memory): exit code 2 like a usage error, but the message is complete in one line (names what was asked and
     * why not), so the command line prints no pointer to --help after it.
     */
    public static PipelineException refused(String message) { return new PipelineException(true, false, message, 2); }

    /** A failure while running (exit code 1 on the command line). */
    public static PipelineException failure(String message) { return new PipelineException(false, false, message, 1); }

    /**
     * A run stopped on request (SIGTERM, SIGINT) after saving its state: the message says where and how to resume;
     * the command line exits with {@code exitCode} (128 + the signal: 143 for SIGTERM, 130 for SIGINT).
     */
    public static PipelineException stopped(String message, int exitCode) { return new PipelineException(false, false, message, exitCode); }

    /** The command line's exit status: 2 for a usage problem or refusal, 1 for a failure, 128 + signal for a stop on request. */
    public int exitCode() { return exitCode; }

    /** True for a usage problem or refusal, false for a failure or a stop. */
    public boolean usage() { return usage; }

    /** Whether the command line should point at --help after the message (usage errors, not refusals). */
    public boolean helpHint() { return helpHint; }
}
