package ai.aligndistil.pipeline.report;

import java.util.ArrayList;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The rules that turn per-seed numbers into verdicts on the paper's claims, and the reward-KL frontier arithmetic
 * they use. Fixed in advance; nothing here looks at which way a claim goes.
 *
 * <p><b>Verdict rule</b> ({@link #verdict}): a claim scored on an out-of-regime run is {@link #OUT_OF_REGIME}
 * (never HELD or DID NOT HOLD); a claim whose statistic cannot be computed on some seed is {@link #NOT_TESTABLE}
 * (with the reason); otherwise, with the per-seed statistics' mean m and standard error se (sd / sqrt(seeds)), the
 * claim {@link #HELD} if m > 2 se, {@link #DID_NOT_HOLD} if m < -2 se, and is {@link #NOT_DISTINGUISHABLE} otherwise
 * (also with one seed, where no standard error exists).
 */
public final class Claims {
    private Claims() {}

    public static final String HELD = "HELD", DID_NOT_HOLD = "DID NOT HOLD", NOT_DISTINGUISHABLE = "NOT DISTINGUISHABLE",
            NOT_TESTABLE = "NOT TESTABLE", OUT_OF_REGIME = "OUT OF REGIME";

    /** A point of a reward-KL curve: sequence-level KL(policy || init) and true reward. */
    public record Point(double kl, double reward) {}

    /** Mean of the values (NaN if empty). */
    public static double mean(double[] v) {
        double s = 0;
        for (double d : v) s += d;
        return v.length == 0 ? Double.NaN : s / v.length;
    }

    /** Standard error of the mean: sample sd / sqrt(n); NaN for fewer than 2 values. */
    public static double se(double[] v) {
        if (v.length < 2) return Double.NaN;
        double m = mean(v), s = 0;
        for (double d : v) s += (d - m) * (d - m);
        return Math.sqrt(s / (v.length - 1) / v.length);
    }

    /**
     * The verdict of a claim from its per-seed statistics (positive = the claim's direction).
     *
     * @param inRegime       whether every run the claim is scored on is in regime on every seed
     * @param notTestable    why the statistic cannot be computed, or null (then every value must be finite)
     */
    public static String verdict(double[] perSeed, boolean inRegime, String notTestable) {
        if (!inRegime) return OUT_OF_REGIME;
        if (notTestable != null) return NOT_TESTABLE;
        for (double d : perSeed) if (!Double.isFinite(d)) return NOT_TESTABLE;
        double m = mean(perSeed), se = se(perSeed);
        if (!Double.isFinite(se)) return NOT_DISTINGUISHABLE;
        if (m > 2 * se) return HELD;
        if (m < -2 * se) return DID_NOT_HOLD;
        return NOT_DISTINGUISHABLE;
    }

    /** A claim's record for results.json: claim, verdict, mean, se, per-seed values, and a note (the reason when not testable). */
    public static Map<String, Object> record(String claim, String rule, double[] perSeed, boolean inRegime, String notTestable) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("claim", claim);
        m.put("verdict", verdict(perSeed, inRegime, notTestable));
        boolean finite = true;
        for (double d : perSeed) finite &= Double.isFinite(d);
        m.put("mean", finite ? mean(perSeed) : null);
        m.put("se", finite ? se(perSeed) : null);
        List<Object> ps = new ArrayList<>();
        for (double d : perSeed) ps.add(Double.isFinite(d) ? d : null);
        m.put("per_seed", ps);
        m.put("rule", rule);
        m.put("in_regime", inRegime);
        if (notTestable != null) m.put("reason", notTestable);
        return m;
    }

    /**
     * The upper frontier of a set of points: sorted by KL, each kept point has a higher reward than every point of
     * lower or equal KL (a point that costs more KL for no more reward is dominated).
     */
    public static List<Point> front(List<Point> pts) {
        List<Point> s = new ArrayList<>(pts);
        s.removeIf(p -> !Double.isFinite(p.kl()) || !Double.isFinite(p.reward()));
        s.sort(Comparator.comparingDouble(Point::kl).thenComparing(Comparator.comparingDouble(Point::reward).reversed()));
        List<Point> f = new ArrayList<>();
        double best = Double.NEGATIVE_INFINITY;
        for (Point p : s) {
            if (p.reward() > best) {
                f.add(p);
                best = p.reward();
            }
        }
        return f;
    }

    /**
     * The frontier's reward at KL {@code k}: linear between consecutive frontier points, flat after the last one up
     * to {@code maxKl} (the largest KL any of the set's points reached); NaN below the first frontier point or above
     * {@code maxKl} (no extrapolation).
     */
    public static double at(List<Point> front, double maxKl, double k) {
        if (front.isEmpty() || k < front.get(0).kl() || k > maxKl) return Double.NaN;
        for (int i = 0; i + 1 < front.size(); i++) {
            Point a = front.get(i), b = front.get(i + 1);
            if (k <= b.kl()) return b.kl() == a.kl() ? b.reward() : a.reward() + (k - a.kl()) / (b.kl() - a.kl()) * (b.reward() - a.reward());
        }
        return front.get(front.size() - 1).reward();
    }

    /**
     * The mean, over the points of {@code a} inside the KL range of {@code b}, of a's reward minus b's frontier at
     * the same KL (interpolated): positive when a's points lie above b's frontier at matched KL. NaN when none of
     * a's points lies in b's range.
     */
    public static double meanGap(List<Point> a, List<Point> b) {
        List<Point> f = front(b);
        double maxKl = Double.NEGATIVE_INFINITY;
        for (Point p : b) if (Double.isFinite(p.kl())) maxKl = Math.max(maxKl, p.kl());
        double s = 0;
        int n = 0;
        for (Point p : a) {
            double r = at(f, maxKl, p.kl());
            if (Double.isFinite(r) && Double.isFinite(p.reward())) {
                s += p.reward() - r;
                n++;
            }
        }
        return n == 0 ? Double.NaN : s / n;
    }

    /** The first step whose reward reaches {@code target}, or NaN if none does; {@code steps} and {@code rewards} in step order. */
    public static double firstReach(double[] steps, double[] rewards, double target) {
        for (int i = 0; i < steps.length; i++) if (rewards[i] >= target) return steps[i];
        return Double.NaN;
    }
}
