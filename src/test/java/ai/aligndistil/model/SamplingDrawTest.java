package ai.aligndistil.model;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;

import java.util.SplittableRandom;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;

/**
 * The sampler draws where the probabilities are (cumulative sum and a count, only B indices to the host); on the CPU
 * it picks exactly what the Java loop over the host copy picked before (so seeded runs and the committed demo stay
 * as they were).
 */
@SuppressWarnings("try")
class SamplingDrawTest {
    /** The former host draw: running f64 sum of the f32 probabilities, the first index where it passes u. */
    static long[] javaDraw(float[] p, int b, int v, SplittableRandom rng) {
        long[] out = new long[b];
        for (int r = 0; r < b; r++) {
            double u = rng.nextDouble(), c = 0;
            int pick = -1;
            for (int i = 0; i < v; i++) {
                c += p[r * v + i];
                if (u < c) { pick = i; break; }
            }
            if (pick < 0) for (int i = v - 1; i >= 0; i--) if (p[r * v + i] > 0) { pick = i; break; }
            out[r] = pick;
        }
        return out;
    }

    @Test
    void tensorDrawEqualsTheJavaLoop() {
        int b = 7, v = 5003;
        try (PointerScope s = new PointerScope()) {
            for (long seed = 1; seed <= 20; seed++) {
                org.bytedeco.pytorch.global.torch.manual_seed(seed);
                Tensor logits = org.bytedeco.pytorch.global.torch.randn(new long[] {b, v}, Tensors.options(ScalarType.Float)).mul(Tensors.scalar(3.0));
                Generator.Options o = new Generator.Options(4, 0.9, 1.0, seed, new long[] {2}, 0);
                long[] got = Generator.sample(logits, o, new SplittableRandom(seed), v);
                float[] p = Tensors.toFloats(logits.to(ScalarType.Float).div(Tensors.scalar(0.9)).softmax(-1));
                assertArrayEquals(javaDraw(p, b, v, new SplittableRandom(seed)), got, "seed " + seed);
            }
        }
    }
}
