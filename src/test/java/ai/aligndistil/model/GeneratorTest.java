package ai.aligndistil.model;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Arrays;
import java.util.List;

import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;

class GeneratorTest {
    static final int V = 300;
    static final CausalLM MODEL = TinyModels.random(TinyModels.qwen2(V, 2), 21, ScalarType.Float);
    static final long[] P0 = {5, 17, 42, 250, 7, 99}, P1 = {88, 12, 201};

    /** Greedy continuation computed with full forward passes (no cache). */
    static long[] greedyWithoutCache(long[] prompt, int n) {
        long[] seq = prompt.clone();
        long[] out = new long[n];
        for (int i = 0; i < n; i++) {
            float[] l = CausalLMTest.logits(MODEL, new long[][] {seq}, null)[0];
            int best = 0;
            for (int j = 1; j < V; j++) if (l[(seq.length - 1) * V + j] > l[(seq.length - 1) * V + best]) best = j;
            out[i] = best;
            seq = Arrays.copyOf(seq, seq.length + 1);
            seq[seq.length - 1] = best;
        }
        return out;
    }

    @Test
    void greedyCachedGenerationEqualsFullForwardArgmaxForEachRowOfAPaddedBatch() {
        Generator.Result r = Generator.generate(MODEL, List.of(P0, P1), Generator.Options.greedy(6, new long[0], 0));
        assertArrayEquals(greedyWithoutCache(P0, 6), r.tokens().get(0));
        assertArrayEquals(greedyWithoutCache(P1, 6), r.tokens().get(1));
        assertFalse(r.finished()[0]);
    }

    @Test
    void minNewTokensMakesEosImpossibleAsTheFirstToken() {
        long eos = greedyWithoutCache(P1, 1)[0];   // the token the model likes best first: make it EOS
        Generator.Result free = Generator.generate(MODEL, List.of(P1), Generator.Options.greedy(5, new long[] {eos}, 0));
        assertArrayEquals(new long[] {eos}, free.tokens().get(0), "without a floor the greedy response is EOS alone");
        Generator.Result floor = Generator.generate(MODEL, List.of(P1), new Generator.Options(5, 0, 1, 0, new long[] {eos}, 0, 1));
        assertTrue(floor.tokens().get(0).length >= 1 && floor.tokens().get(0)[0] != eos, Arrays.toString(floor.tokens().get(0)));
        // Sampling, nearly greedy, over many seeds: EOS first without the floor, never with it.
        int eosFirstFree = 0;
        for (long seed = 0; seed < 20; seed++) {
            Generator.Result f = Generator.generate(MODEL, List.of(P1, P1), new Generator.Options(3, 0.05, 1, seed, new long[] {eos}, 0, 0));
            Generator.Result m = Generator.generate(MODEL, List.of(P1, P1), new Generator.Options(3, 0.05, 1, seed, new long[] {eos}, 0, 1));
            for (int r = 0; r < 2; r++) {
                if (f.tokens().get(r)[0] == eos) eosFirstFree++;
                assertTrue(m.tokens().get(r)[0] != eos, "seed " + seed + " row " + r + ": EOS sampled first despite min-new-tokens 1");
            }
        }
        assertTrue(eosFirstFree > 20, "the test's EOS is the likely first token without the floor (" + eosFirstFree + " of 40)");
        // A floor of 2: the first two tokens are not EOS.
        Generator.Result two = Generator.generate(MODEL, List.of(P1), new Generator.Options(4, 0, 1, 0, new long[] {eos}, 0, 2));
        assertTrue(two.tokens().get(0).length >= 2 && two.tokens().get(0)[0] != eos && two.tokens().get(0)[1] != eos);
    }

    @Test
    void stopsAtEos() {
        long[] g = greedyWithoutCache(P1, 3);
        Generator.Result r = Generator.generate(MODEL, List.of(P0, P1), Generator.Options.greedy(8, new long[] {g[1]}, 0));
        assertTrue(r.finished()[1]);
        int first = 0;
        while (g[first] != g[1]) first++;
        assertArrayEquals(Arrays.copyOf(g, first + 1), r.tokens().get(1), "the row ends with its first EOS");
    }

    @Test
    void samplingIsReproducibleForASeedAndTinyTopPIsGreedy() {
        Generator.Options a = new Generator.Options(8, 1.0, 0.9, 42, new long[0], 0);
        Generator.Result r1 = Generator.generate(MODEL, List.of(P0, P1), a);
        Generator.Result r2 = Generator.generate(MODEL, List.of(P0, P1), a);
        assertArrayEquals(r1.tokens().get(0), r2.tokens().get(0));
        assertArrayEquals(r1.tokens().get(1), r2.tokens().get(1));
        Generator.Result other = Generator.generate(MODEL, List.of(P0, P1), new Generator.Options(8, 2.0, 1.0, 43, new long[0], 0));
        assertFalse(Arrays.equals(r1.tokens().get(0), other.tokens().get(0)) && Arrays.equals(r1.tokens().get(1), other.tokens().get(1)));
        Generator.Result nucleus = Generator.generate(MODEL, List.of(P0), new Generator.Options(5, 1.0, 1e-9, 7, new long[0], 0));
        assertArrayEquals(greedyWithoutCache(P0, 5), nucleus.tokens().get(0));
        assertEquals(8, r1.tokens().get(0).length);
    }
}
