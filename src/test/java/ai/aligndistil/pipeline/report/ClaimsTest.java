package ai.aligndistil.pipeline.report;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import java.util.Map;

import org.junit.jupiter.api.Test;

/** The verdict rule and the frontier arithmetic the claims use. */
class ClaimsTest {
    @Test
    void twoStandardErrorsDecide() {
        // mean 1, sd 0.1 over 3 seeds: se = 0.0577, 1 > 2 se.
        assertEquals(Claims.HELD, Claims.verdict(new double[] {0.9, 1.0, 1.1}, true, null));
        assertEquals(Claims.DID_NOT_HOLD, Claims.verdict(new double[] {-0.9, -1.0, -1.1}, true, null));
        // mean 0.1, values 0, 0.1, 0.2: se = 0.0577, 2 se = 0.115 > 0.1.
        assertEquals(Claims.NOT_DISTINGUISHABLE, Claims.verdict(new double[] {0.0, 0.1, 0.2}, true, null));
        assertEquals(Claims.NOT_DISTINGUISHABLE, Claims.verdict(new double[] {-0.2, -0.1, 0.0}, true, null));
        // Just above and just below the line: values m - d, m, m + d have se = d / sqrt(3).
        double d = 1.0, se = d / Math.sqrt(3);
        assertEquals(Claims.HELD, Claims.verdict(new double[] {2 * se * 1.001 - d, 2 * se * 1.001, 2 * se * 1.001 + d}, true, null));
        assertEquals(Claims.NOT_DISTINGUISHABLE, Claims.verdict(new double[] {2 * se * 0.999 - d, 2 * se * 0.999, 2 * se * 0.999 + d}, true, null));
        // One seed: no standard error, never a verdict either way.
        assertEquals(Claims.NOT_DISTINGUISHABLE, Claims.verdict(new double[] {5.0}, true, null));
        assertEquals(0.1 / Math.sqrt(3), Claims.se(new double[] {0.9, 1.0, 1.1}), 1e-12);
    }

    @Test
    void notTestableAndOutOfRegime() {
        assertEquals(Claims.NOT_TESTABLE, Claims.verdict(new double[] {1, Double.NaN, 1}, true, null));
        assertEquals(Claims.NOT_TESTABLE, Claims.verdict(new double[] {1, 1.1, 0.9}, true, "no run reaches the target"));
        // Out of regime wins over everything: never HELD or DID NOT HOLD, whatever the numbers.
        for (double[] v : new double[][] {{0.9, 1.0, 1.1}, {-0.9, -1.0, -1.1}, {0, 0.1, 0.2}, {1, Double.NaN, 1}})
            assertEquals(Claims.OUT_OF_REGIME, Claims.verdict(v, false, null));
        assertEquals(Claims.OUT_OF_REGIME, Claims.verdict(new double[] {1, 1, 1}, false, "reason"));
        Map<String, Object> r = Claims.record("c", "rule", new double[] {1, Double.NaN}, true, "why");
        assertEquals(Claims.NOT_TESTABLE, r.get("verdict"));
        assertEquals("why", r.get("reason"));
        assertEquals(null, r.get("mean"));
    }

    @Test
    void frontierInterpolationAndGap() {
        // B: (0, 0), (1, 1), (2, 0.5) dominated, (3, 2). Front: (0,0), (1,1), (3,2).
        List<Claims.Point> b = List.of(new Claims.Point(0, 0), new Claims.Point(1, 1), new Claims.Point(2, 0.5), new Claims.Point(3, 2));
        List<Claims.Point> f = Claims.front(b);
        assertEquals(3, f.size());
        assertEquals(1.5, Claims.at(f, 3, 2), 1e-12);
        assertEquals(0.5, Claims.at(f, 3, 0.5), 1e-12);
        assertTrue(Double.isNaN(Claims.at(f, 3, 3.5)), "no extrapolation beyond the largest KL");
        // A: (0.5, 1) is 0.5 above; (2, 1) is 0.5 below; (5, 9) is outside B's range and left out.
        List<Claims.Point> a = List.of(new Claims.Point(0.5, 1), new Claims.Point(2, 1), new Claims.Point(5, 9));
        assertEquals(0.0, Claims.meanGap(a, b), 1e-12);
        assertEquals(0.5, Claims.meanGap(List.of(new Claims.Point(0.5, 1)), b), 1e-12);
        assertTrue(Double.isNaN(Claims.meanGap(List.of(new Claims.Point(5, 9)), b)));
        // A front that ends flat: after the last front point the reward stays at its value up to the largest KL.
        List<Claims.Point> c = List.of(new Claims.Point(0, 0), new Claims.Point(1, 2), new Claims.Point(4, 1));
        assertEquals(2.0, Claims.at(Claims.front(c), 4, 3), 1e-12);
        assertEquals(16.0, Claims.firstReach(new double[] {0, 8, 16}, new double[] {0, 0.5, 1}, 0.9));
        assertTrue(Double.isNaN(Claims.firstReach(new double[] {0, 8}, new double[] {0, 0.5}, 0.9)));
    }
}
