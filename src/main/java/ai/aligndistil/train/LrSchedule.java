package ai.aligndistil.train;

/**
 * Linear warmup then cosine decay to a floor, stepped once per optimizer step (Hugging Face
 * {@code cosine_with_min_lr}, spec section 6.4).
 *
 * <p>For optimizer step {@code s} (0-based): {@code s < warmup}: {@code peak * s / warmup} (so the very first
 * step uses 0, as the reference schedule does); after that
 * {@code min + (peak - min) * 0.5 * (1 + cos(pi * (s - warmup) / (total - warmup)))}, which reaches
 * {@code min} at {@code s = total}. Steps past {@code total} stay at {@code min}.
 *
 * @param peakLr      the learning rate at the end of warmup
 * @param totalSteps  optimizer steps of the whole run
 * @param warmupSteps steps of linear warmup from 0
 * @param minLr       the floor the cosine decays to
 */
public record LrSchedule(double peakLr, long totalSteps, long warmupSteps, double minLr) {
    public LrSchedule {
        if (!(peakLr >= 0) || totalSteps <= 0 || warmupSteps < 0 || warmupSteps > totalSteps || !(minLr >= 0) || minLr > peakLr)
            throw new IllegalArgumentException("bad schedule: peak=" + peakLr + " total=" + totalSteps + " warmup=" + warmupSteps + " min=" + minLr);
    }

    /** The spec's schedule: warmup {@code ceil(0.1 * total)} steps, floor {@code 0.1 * peak}. */
    public static LrSchedule spec(double peakLr, long totalSteps) {
        return new LrSchedule(peakLr, totalSteps, (long) Math.ceil(0.1 * totalSteps), 0.1 * peakLr);
    }

    /** The learning rate of optimizer step {@code step} (0-based). */
    public double lr(long step) {
        if (step < warmupSteps) return peakLr * step / Math.max(1, warmupSteps);
        if (step >= totalSteps) return minLr;
        double progress = (double) (step - warmupSteps) / Math.max(1, totalSteps - warmupSteps);
        return minLr + (peakLr - minLr) * 0.5 * (1 + Math.cos(Math.PI * progress));
    }
}
