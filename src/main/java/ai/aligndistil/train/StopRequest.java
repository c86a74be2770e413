package ai.aligndistil.train;

import java.io.PrintStream;
import java.util.LinkedHashMap;
import java.util.Map;

import sun.misc.Signal;
import sun.misc.SignalHandler;

/**
 * A request to stop a training run cleanly, set by SIGTERM or SIGINT (or by {@link #request}) and read by the
 * training loop at optimiser-step boundaries: the loop finishes the step it is in, writes a checkpoint of it
 * and ends with exit status {@code 128 + signal} (143 for SIGTERM, 130 for SIGINT).
 *
 * <p>While installed, the handlers replace the JVM's own (which would run the shutdown hooks and exit at once,
 * losing the work since the last checkpoint); {@link #close()} puts the previous handlers back. The handler
 * only sets a flag and prints one line: it never touches the model or a file, so a second signal while the
 * checkpoint is being written is harmless (it prints that the stop is already under way and is otherwise
 * ignored; SIGKILL remains safe because every checkpoint is written atomically).
 *
 * <p>Uses {@code sun.misc.Signal} (module jdk.unsupported, exported): the only JDK API that lets a program
 * replace the SIGTERM/SIGINT behaviour instead of adding a shutdown hook that cannot delay the exit. Where the
 * JVM refuses a handler (e.g. under {@code -Xrs}) the signal keeps its default behaviour and {@link #problem()}
 * says why.
 *
 * <p>Several processes (data parallelism): each rank installs its own request (the launcher of
 * {@code --nproc-per-node} also forwards SIGTERM to its workers); at every optimiser-step boundary the training loop
 * all-reduces {@link #agreedAtStepBoundary} across the ranks ({@code DistGroup.any}), so a signal reaching any rank
 * stops every rank after the same step, rank 0 saves it, and a rank that learns of the stop from another calls
 * {@link #request} itself so that it exits with the same code (DataParallelStopTest).
 */
public final class StopRequest implements AutoCloseable {
    /** Exit status of a run stopped by a signal: 128 + the signal number (SIGTERM 15 → 143, SIGINT 2 → 130). */
    public static int exitCode(String signal) {
        return switch (signal) {
            case "TERM" -> 143;
            case "INT" -> 130;
            default -> 1;
        };
    }

    private final String who;
    private final PrintStream err;
    private final Map<Signal, SignalHandler> previous = new LinkedHashMap<>();
    private volatile String signal;
    private volatile String problem;
    private volatile boolean saving;

    private StopRequest(String who, PrintStream err) {
        this.who = who;
        this.err = err;
    }

    /** A request that only {@link #request} sets (no signal handler): for callers that are not a process's main job. */
    public static StopRequest manual(String who, PrintStream err) {
        return new StopRequest(who, err);
    }

    /** Installs SIGTERM and SIGINT handlers until {@link #close()}. */
    public static StopRequest install(String who, PrintStream err) {
        StopRequest r = new StopRequest(who, err);
        for (String name : new String[] {"TERM", "INT"}) {
            try {
                Signal s = new Signal(name);
                r.previous.put(s, Signal.handle(s, sig -> r.request(sig.getName())));
            } catch (IllegalArgumentException | UnsupportedOperationException e) {
                r.problem = "SIG" + name + " keeps its default behaviour: " + e.getMessage();
            }
        }
        return r;
    }

    /** Asks the loop to stop after the step it is in (what the signal handler does; usable from tests and callers). */
    public void request(String signalName) {
        if (signal == null) {
            signal = signalName;
            err.println(who + ": SIG" + signalName + " received: finishing the current optimiser step, then saving a checkpoint and exiting"
                    + " (a second signal is ignored; SIGKILL is safe too: checkpoints are written atomically)");
        } else {
            err.println(who + ": SIG" + signalName + " again: already stopping" + (saving ? " (the checkpoint is being written)" : "") + "; ignored");
        }
        err.flush();
    }

    /** True once a stop was requested on this process. */
    public boolean requested() { return signal != null; }

    /** The signal that asked for the stop ("TERM", "INT", or the name given to {@link #request}), or null. */
    public String signal() { return signal; }

    /** Why a handler could not be installed, or null. */
    public String problem() { return problem; }

    /** Marks the checkpoint write that follows a stop (only changes what a second signal prints). */
    public void saving(boolean s) { this.saving = s; }

    /**
     * Whether this rank asks to stop after optimiser step {@code step}, read at the step boundary: the local flag.
     * With data parallelism the training loop all-reduces it across the ranks (see the class comment).
     */
    public boolean agreedAtStepBoundary(long step) {
        return requested();
    }

    /** Puts the previous handlers back. */
    @Override
    public void close() {
        for (var e : previous.entrySet()) {
            try {
                Signal.handle(e.getKey(), e.getValue());
            } catch (IllegalArgumentException ignored) {
                // the JVM took the signal back (shutting down); nothing to restore
            }
        }
        previous.clear();
    }
}
