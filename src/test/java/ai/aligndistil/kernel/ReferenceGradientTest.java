package ai.aligndistil.kernel;

import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The reference's gradient against central finite differences of its own loss, for every variant, with
 * T != 1 and Ts != 1, small V. This pins the gradient formula (spec section 4) independently of any kernel.
 */
class ReferenceGradientTest {

    @ParameterizedTest
    @EnumSource(Variant.class)
    void gradientMatchesCentralDifferences(Variant variant) {
        int B = 2, T = 3, V = 9;
        LossConfig cfg = LossConfig.defaults(variant).withTemperature(0.8).withStudentTemperature(1.25);
        SplittableRandom r = new SplittableRandom(variant.ordinal() + 7);
        float[] s = new float[B * T * V], d = new float[B * T * V], q = new float[B * T * V];
        for (int i = 0; i < s.length; i++) {
            s[i] = (float) (2 * r.nextGaussian());
            d[i] = (float) (2 * r.nextGaussian());
            q[i] = (float) (d[i] + 0.7 * r.nextGaussian());
        }
        boolean[] mask = {true, false, true, true, true, false};
        float[] grad = new float[s.length];
        FusedDistillLossReference.run(cfg, B, T, V, s, d, q, mask, grad, null, null, null, 0);

        // h = 2^-7: exactly representable shifts of f32 logits; central differences have O(h^2) ~ 6e-5 relative error.
        float h = 0x1p-7f;
        double worst = 0;
        for (int i = 0; i < s.length; i++) {
            float keep = s[i];
            s[i] = keep + h;
            double up = FusedDistillLossReference.run(cfg, B, T, V, s, d, q, mask, new float[s.length], null, null, null, 0);
            s[i] = keep - h;
            double down = FusedDistillLossReference.run(cfg, B, T, V, s, d, q, mask, new float[s.length], null, null, null, 0);
            s[i] = keep;
            double fd = (up - down) / (2 * h);
            double err = Math.abs(fd - grad[i]) / Math.max(1e-3, Math.abs(fd));
            worst = Math.max(worst, err);
            assertTrue(err < 2e-3, variant + ": element " + i + " (row " + i / V + ", col " + i % V + "): analytic " + grad[i] + ", finite difference " + fd);
        }
        assertTrue(worst < 2e-3);
    }
}
