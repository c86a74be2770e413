package ai.aligndistil.train;

/**
 * A small, fast, reproducible random generator (SplitMix64) whose whole state is one {@code long}, so a
 * training checkpoint can store and restore it exactly (for data order and sampling decisions made in Java).
 */
public final class Rng {
    private long state;

    public Rng(long seed) { this.state = seed; }

    /** The complete state; {@code new Rng(0).setState(s)} continues the same sequence. */
    public long state() { return state; }

    public Rng setState(long s) {
        this.state = s;
        return this;
    }

    public long nextLong() {
        long z = (state += 0x9E3779B97F4A7C15L);
        z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
        z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
        return z ^ (z >>> 31);
    }

    /** Uniform in [0, 1) with 53 random bits. */
    public double nextDouble() { return (nextLong() >>> 11) * 0x1.0p-53; }

    /** Uniform in [0, bound). */
    public int nextInt(int bound) {
        if (bound <= 0) throw new IllegalArgumentException("bound must be positive");
        return (int) Math.floorMod(nextLong(), (long) bound);
    }

    /** Fisher-Yates shuffle in place. */
    public void shuffle(int[] a) {
        for (int i = a.length - 1; i > 0; i--) {
            int j = nextInt(i + 1);
            int t = a[i];
            a[i] = a[j];
            a[j] = t;
        }
    }
}
