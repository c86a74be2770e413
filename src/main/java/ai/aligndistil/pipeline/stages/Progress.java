package ai.aligndistil.pipeline.stages;

import java.io.PrintStream;

/**
 * A one-line progress bar with ETA on stderr: {@code dpo [########------] 40/96 0:12<0:17 loss 0.512}. On a
 * terminal it redraws in place (at most 5 times a second); otherwise it prints a line at every 10 %.
 */
public final class Progress {
    private final String label;
    private final long total;
    private final PrintStream err;
    private final boolean tty = System.console() != null;
    private final long start = System.nanoTime();
    private final long startStep;
    private long lastDraw;
    private int lastDecile = -1;
    private final boolean quiet;

    public Progress(String label, long startStep, long total, PrintStream err, boolean quiet) {
        this.label = label;
        this.startStep = startStep;
        this.total = total;
        this.err = err;
        this.quiet = quiet;
    }

    public void update(long done, String info) {
        if (quiet) return;
        long now = System.nanoTime();
        int decile = (int) (10 * done / Math.max(1, total));
        boolean last = done >= total;
        if (tty) {
            if (!last && now - lastDraw < 200_000_000L) return;
        } else if (decile == lastDecile && !last) {
            return;
        }
        lastDraw = now;
        lastDecile = decile;
        double elapsed = (now - start) / 1e9;
        long doneHere = done - startStep;
        double eta = doneHere <= 0 ? Double.NaN : elapsed / doneHere * (total - done);
        int width = 24, filled = (int) (width * done / Math.max(1, total));
        String bar = "#".repeat(filled) + "-".repeat(width - filled);
        String line = String.format("%-10s [%s] %d/%d %s<%s %s", label, bar, done, total, clock(elapsed), clock(eta), info == null ? "" : info);
        if (tty) {
            err.print("\r" + line + "\u001b[K");
            if (last) err.println();
        } else {
            err.println(line);
        }
        err.flush();
    }

    static String clock(double s) {
        if (!Double.isFinite(s)) return "?:??";
        long t = Math.round(s);
        return t >= 3600 ? String.format("%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60) : String.format("%d:%02d", t / 60, t % 60);
    }
}
