package ai.aligndistil.pipeline.config;

/**
 * A pipeline failure meant for the user as one line: either a usage problem (a bad or missing option, a config
 * file that names an unknown key; the command line exits 2) or a failure while running (exit 1). The pipeline
 * never exits the process itself; the command layer maps {@link #usage()} to the exit code.
 */
public final class PipelineException extends RuntimeException {
    private static final long serialVersionUID = 1L;
    private final boolean usage;
    private final boolean helpHint;

    private PipelineException(boolean usage, boolean helpHint, String message) {
        super(message);
        this.usage = usage;
        this.helpHint = helpHint;
    }

    /** A problem with what the user asked for (exit code 2 on the command line). */
    public static PipelineException usage(String message) { return new PipelineException(true, true, message); }

    /**
     * A request that cannot be served on this machine (a device that cannot be used, a run that will not fit in its
     * memory): exit code 2 like a usage error, but the message is complete in one line (names what was asked and
     * why not), so the command line prints no pointer to --help after it.
     */
    public static PipelineException refused(String message) { return new PipelineException(true, false, message); }

    /** A failure while running (exit code 1 on the command line). */
    public static PipelineException failure(String message) { return new PipelineException(false, false, message); }

    /** True for a usage problem, false for a failure while running. */
    public boolean usage() { return usage; }

    /** Whether the command line should point at --help after the message (usage errors, not refusals). */
    public boolean helpHint() { return helpHint; }
}
