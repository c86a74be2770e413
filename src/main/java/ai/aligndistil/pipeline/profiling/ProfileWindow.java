package ai.aligndistil.pipeline.profiling;

import ai.aligndistil.pipeline.config.Options;

/**
 * The optimiser steps that {@code --profile-step N} or {@code --profile-steps N:M} bracket with
 * {@code cudaProfilerStart} / {@code cudaProfilerStop} (for {@code nsys profile --capture-range=cudaProfilerApi}
 * and {@code ncu --profile-from-start off}; docs/profiling.md). Steps are numbered from 1, as the {@code step}
 * field of metrics.jsonl; both ends are included. The window covers the steps themselves (forward, loss,
 * backward, clip, optimiser step), not the checkpoint or curve point that may follow the last one.
 */
public record ProfileWindow(long first, long last) {
    public ProfileWindow {
        if (first < 1 || last < first)
            throw new IllegalArgumentException("profile window must be 1 <= N <= M, got " + first + ":" + last);
    }

    public boolean contains(long step1) { return step1 >= first && step1 <= last; }

    /** The window of the options, or null when neither flag is given. Throws IllegalArgumentException naming the flag on bad input. */
    public static ProfileWindow of(Options o) {
        String one = o.has("profile-step") ? o.str("profile-step").trim() : null;
        String many = o.has("profile-steps") ? o.str("profile-steps").trim() : null;
        if (one != null && many != null)
            throw new IllegalArgumentException("--profile-step and --profile-steps are exclusive (got " + one + " and " + many + ")");
        if (one != null) {
            long n = parseStep("--profile-step", one, one);
            return new ProfileWindow(n, n);
        }
        if (many == null) return null;
        int c = many.indexOf(':');
        if (c < 0) throw new IllegalArgumentException("--profile-steps must be N:M (first and last step, from 1), got '" + many + "'");
        long a = parseStep("--profile-steps", many.substring(0, c).trim(), many);
        long b = parseStep("--profile-steps", many.substring(c + 1).trim(), many);
        if (b < a) throw new IllegalArgumentException("--profile-steps " + many + ": the last step is before the first");
        return new ProfileWindow(a, b);
    }

    private static long parseStep(String flag, String s, String whole) {
        long n;
        try {
            n = Long.parseLong(s);
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException(flag + " takes optimiser step numbers (from 1), got '" + whole + "'");
        }
        if (n < 1) throw new IllegalArgumentException(flag + " steps are numbered from 1 (as in metrics.jsonl), got '" + whole + "'");
        return n;
    }

    @Override
    public String toString() { return first == last ? "step " + first : "steps " + first + ".." + last; }
}
