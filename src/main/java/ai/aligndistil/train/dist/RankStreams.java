package ai.aligndistil.train.dist;

/**
 * Random streams of a data-parallel run: the seed of a draw is a function of (run seed, rank, optimiser step)
 * only, so ranks sample differently from one another, a run is reproducible, and a resumed run draws at every
 * step what the uninterrupted one drew. Rank 0's stream is the single-process stream, so a one-process run is
 * unchanged by data parallelism.
 */
public final class RankStreams {
    private RankStreams() {}

    /** The seed of the draws of {@code rank} at optimiser step {@code step} (0-based) of a run seeded {@code seed}. */
    public static long seed(long seed, int rank, long step) {
        long base = seed * 0x9E3779B97F4A7C15L + step * 1_000_003L;
        if (rank == 0) return base;
        return mix(base ^ mix(0xD1B54A32D192ED03L * (rank + 1L)));
    }

    /** SplitMix64's finaliser: a bijection that spreads nearby inputs over the whole range. */
    static long mix(long z) {
        z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
        z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
        return z ^ (z >>> 31);
    }
}
