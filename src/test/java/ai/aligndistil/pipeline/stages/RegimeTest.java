package ai.aligndistil.pipeline.stages;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import java.util.Map;

import org.junit.jupiter.api.Test;

import ai.aligndistil.kernel.LossConfig;
import ai.aligndistil.kernel.Variant;

/** The regime figures against a hand computation (values worked out separately in float64, written here as numbers). */
class RegimeTest {
    static final double TOL = 1e-12;

    static float[] f(double... v) {
        float[] o = new float[v.length];
        for (int i = 0; i < v.length; i++) o[i] = (float) v[i];
        return o;
    }

    @Test
    void figuresOfTwoTrainingRowsAndAFirstRowMatchTheHandComputation() {
        // beta2 2, eps 1e-3, off-policy (official beta2 10), EOS = column 2 of V = 3.
        Regime g = new Regime(new LossConfig(Variant.ALIGNDISTIL, 0.1, 2.0, 1e-3, 1.0, 1.0, true), false, 2);
        // Row A: a training row and the first response row. zd = (1,0,0), z2 = (0,1,0), zi = (0,0,0).
        g.addRow(f(1, 0, 0), 0, f(0, 1, 0), 0, f(0, 0, 0), 0, 3, true, true);
        // Row B: a training row only. zd = (0,2,0), z2 = (0,2,1), zi = (1,0,0).
        g.addRow(f(9, 0, 2, 0), 1, f(0, 2, 1), 0, f(1, 0, 0), 0, 3, true, false);
        // Row C: the first response row of a sequence whose training rows start later (official positions): P(EOS) only.
        g.addRow(f(0, 2, 0), 0, f(0, 2, 1), 0, f(1, 0, 0), 0, 3, false, true);
        Map<String, Object> s = g.summary();
        // tvd_A = 0.7283506542974874, tvd_B = 0.2764429842711938; alpha = 2 tvd + 1e-3.
        assertEquals((0.7283506542974874 + 0.2764429842711938) / 2, (double) s.get("tvd_mean"), TOL);
        assertEquals((1.4577013085949746 + 0.5538859685423876) / 2, (double) s.get("mean_alpha"), TOL);
        // numpy-style quantiles of two values: p10 = lo + 0.1 (hi - lo).
        assertEquals(0.6442675025476463, (double) s.get("alpha_p10"), TOL);
        assertEquals(0.5538859685423876 + 0.9 * (1.4577013085949746 - 0.5538859685423876), (double) s.get("alpha_p90"), TOL);
        // KL(pi_dpo || pi_init) per row: 0.12328445950188784, 0.7793650531141627.
        assertEquals(0.45132475630802527, (double) s.get("kl_dpo_init_per_token"), TOL);
        // Teacher z* = zd + alpha (zd - z2): P(EOS) 0.07745508960529239 (row A, alpha_A), 0.06411501681229646 (row C, alpha_B's tvd).
        assertEquals((0.07745508960529239 + 0.06411501681229646) / 2, (double) s.get("teacher_eos_first_row"), TOL);
        assertEquals((0.21194155761708544 + 0.10650697891920073) / 2, (double) s.get("dpo_eos_first_row"), TOL);
        // At the official beta2 10: 10 x 0.5023968192843405 + 1e-3 = 5.02 > 3, and KL 0.45 > 0.05: out of regime.
        assertEquals(5.024968192843406, (double) s.get("mean_alpha_official_beta2"), 1e-12);
        assertEquals(2.0, (double) s.get("beta2"));
        assertEquals(Boolean.FALSE, s.get("in_regime"));
        assertEquals(2.0, (double) s.get("rows"));
        assertEquals(2.0, (double) s.get("sequences"));
    }

    @Test
    void inRegimeIsComputedAtTheOfficialBeta2WhateverTheRunsOwn() {
        // The same rows give the same in_regime for beta2 0.3 and beta2 10: it is a property of the pair.
        for (double b2 : new double[] {0.3, 10}) {
            Regime g = new Regime(new LossConfig(Variant.ALIGNDISTIL, 0.1, b2, 1e-3, 1.0, 1.0, true), false, 2);
            // tvd = 0.1 exactly on one row (pd = (0.5, 0.5, 0), p2 = (0.45, 0.55, 0) up to the -inf column), KL to init 0.
            g.addRow(f(0, 0, -1e30), 0, f(Math.log(0.45), Math.log(0.55), -1e30), 0, f(0, 0, -1e30), 0, 3, true, true);
            Map<String, Object> s = g.summary();
            assertEquals(0.1, (double) s.get("tvd_mean"), 1e-6);
            assertEquals(1.001, (double) s.get("mean_alpha_official_beta2"), 1e-6);
            assertEquals(b2 * 0.1 + 1e-3, (double) s.get("mean_alpha"), 1e-6);
            assertEquals(Boolean.TRUE, s.get("in_regime"), "beta2 " + b2);
        }
        // On-policy: official beta2 15.
        Regime on = new Regime(new LossConfig(Variant.ALIGNDISTIL, 0.1, 15, 1e-3, 1.0, 1.0, true), true, 2);
        on.addRow(f(0, 0, -1e30), 0, f(Math.log(0.45), Math.log(0.55), -1e30), 0, f(0, 0, -1e30), 0, 3, true, true);
        assertEquals(1.501, (double) on.summary().get("mean_alpha_official_beta2"), 1e-6);
    }

    @Test
    void theRuleItself() {
        assertTrue(Regime.inRegime(0.5, 0.05));
        assertTrue(Regime.inRegime(3.0, 0.0));
        assertTrue(Regime.inRegime(1.5, 0.01));
        assertFalse(Regime.inRegime(0.49, 0.01));
        assertFalse(Regime.inRegime(3.01, 0.01));
        assertFalse(Regime.inRegime(1.5, 0.0501));
        assertFalse(Regime.inRegime(Double.NaN, 0.01));
        assertEquals(10.0, Regime.officialBeta2(false));
        assertEquals(15.0, Regime.officialBeta2(true));
    }

    @Test
    void quantilesAreNumpysLinearOnes() {
        assertEquals(2.5, Regime.quantile(List.of(4.0, 1.0, 2.0, 3.0), 0.5), TOL);
        assertEquals(1.3, Regime.quantile(List.of(4.0, 1.0, 2.0, 3.0), 0.1), TOL);
        assertTrue(Double.isNaN(Regime.quantile(List.of(), 0.5)));
    }
}
