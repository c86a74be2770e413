package ai.aligndistil.pipeline.config;

/**
 * A pipeline failure meant for the user as one line: either a usage problem (a bad or missing option, a config
 * file that names an unknown key; the command line exits 2) or a failure while running (exit 1). The pipeline
 * never exits the process itself; the command layer maps {@link #usage()} to the exit code.
 */
public final class PipelineException extends RuntimeException {
    private static final long serialVersionUID = 1L;
    private final boolean usage;

    private PipelineException(boolean usage, String message) {
        super(message);
        this.usage = usage;
    }

    /** A problem with what the user asked for (exit code 2 on the command line). */
    public static PipelineException usage(String message) { return new PipelineException(true, message); }

    /** A failure while running (exit code 1 on the command line). */
    public static PipelineException failure(String message) { return new PipelineException(false, message); }

    /** True for a usage problem, false for a failure while running. */
    public boolean usage() { return usage; }
}
