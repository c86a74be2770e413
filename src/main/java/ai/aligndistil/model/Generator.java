package ai.aligndistil.model;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.SplittableRandom;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.InferenceMode;
import org.bytedeco.pytorch.T_TensorTensor_T;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;


/**
 * Batched autoregressive sampling with a KV cache: prompts are left-padded into one batch, prefilled in one
 * forward pass, then extended one token per step. Sampling (temperature, nucleus/top-p) happens in Java with
 * a {@link SplittableRandom} seeded per call, so a seed reproduces the output exactly (a training run derives
 * each call's seed from its own checkpointed random state). A row stops at its first EOS token; the loop
 * stops when every row has stopped or after {@code maxNewTokens}.
 */
@SuppressWarnings("try")
public final class Generator {
    private Generator() {}

    /**
     * @param maxNewTokens most tokens generated per row
     * @param temperature  logits are divided by it; {@code <= 0} means greedy (argmax)
     * @param topP         nucleus sampling: sample from the smallest set of most likely tokens whose probability
     *                     reaches {@code topP}; 1 disables it
     * @param seed         seed of the sampling generator
     * @param eosIds       ids that end a row (e.g. {@code <|im_end|>}, {@code <|endoftext|>})
     * @param padId        id used for left padding and after a row has stopped
     * @param minNewTokens the EOS ids get probability 0 for the first {@code minNewTokens} tokens of a row (vLLM's
     *                     {@code min_tokens}; the official on-policy sampler uses 1, so a response is never empty)
     */
    public record Options(int maxNewTokens, double temperature, double topP, long seed, long[] eosIds, long padId, int minNewTokens) {
        public Options {
            if (maxNewTokens < 0) throw new IllegalArgumentException("maxNewTokens must be >= 0");
            if (minNewTokens < 0) throw new IllegalArgumentException("minNewTokens must be >= 0, got " + minNewTokens);
            if (!(topP > 0 && topP <= 1)) throw new IllegalArgumentException("topP must be in (0, 1]");
            eosIds = eosIds == null ? new long[0] : eosIds.clone();
        }

        /** No minimum length (EOS may be the first token). */
        public Options(int maxNewTokens, double temperature, double topP, long seed, long[] eosIds, long padId) {
            this(maxNewTokens, temperature, topP, seed, eosIds, padId, 0);
        }

        /** Greedy decoding. */
        public static Options greedy(int maxNewTokens, long[] eosIds, long padId) {
            return new Options(maxNewTokens, 0, 1, 0, eosIds, padId);
        }
    }

    /**
     * What was generated.
     *
     * @param tokens   per row, the new tokens (including the EOS that stopped it, if any)
     * @param finished per row, whether it stopped at an EOS
     */
    public record Result(List<long[]> tokens, boolean[] finished) {}

    /** Generates continuations of {@code prompts} (each non-empty). */
    public static Result generate(CausalLM model, List<long[]> prompts, Options o) {
        int b = prompts.size();
        if (b == 0) return new Result(List.of(), new boolean[0]);
        int tp = 0;
        for (long[] p : prompts) {
            if (p.length == 0) throw new IllegalArgumentException("empty prompt");
            tp = Math.max(tp, p.length);
        }
        long[][] ids = new long[b][tp], mask = new long[b][tp];
        for (int r = 0; r < b; r++) {
            long[] p = prompts.get(r);
            int off = tp - p.length;
            Arrays.fill(ids[r], 0, off, o.padId());
            System.arraycopy(p, 0, ids[r], off, p.length);
            Arrays.fill(mask[r], off, tp, 1);
        }
        SplittableRandom rng = new SplittableRandom(o.seed());
        List<List<Long>> out = new ArrayList<>();
        for (int r = 0; r < b; r++) out.add(new ArrayList<>());
        boolean[] finished = new boolean[b];
        int v = model.config().vocabSize();
        try (InferenceMode im = new InferenceMode()) {
            KvCache cache = new KvCache(model.config(), b, tp + Math.max(1, o.maxNewTokens()), model.dtype(), model.device());
            long[] next;
            try (PointerScope s = new PointerScope()) {
                Tensor logits = model.forward(Tensors.longs(ids), Tensors.longs(mask), cache);
                next = sample(withoutEos(logits.select(1, tp - 1), o, 0), o, rng, v);
            }
            for (int step = 0; step < o.maxNewTokens(); step++) {
                long[][] stepIds = new long[b][1], stepMask = new long[b][1];
                boolean any = false;
                for (int r = 0; r < b; r++) {
                    if (finished[r]) {
                        stepIds[r][0] = o.padId();
                        continue;
                    }
                    out.get(r).add(next[r]);
                    if (isEos(next[r], o.eosIds())) finished[r] = true;
                    else any = true;
                    stepIds[r][0] = next[r];
                    stepMask[r][0] = 1;
                }
                if (!any || step == o.maxNewTokens() - 1) break;
                try (PointerScope s = new PointerScope()) {
                    Tensor logits = model.forward(Tensors.longs(stepIds), Tensors.longs(stepMask), cache);
                    next = sample(withoutEos(logits.select(1, 0), o, step + 1), o, rng, v);
                }
            }
        }
        List<long[]> tokens = new ArrayList<>();
        for (List<Long> l : out) tokens.add(l.stream().mapToLong(Long::longValue).toArray());
        return new Result(tokens, finished);
    }

    /**
     * The last-position logits with the EOS columns at -inf while fewer than {@code minNewTokens} tokens have been
     * generated ({@code generated} is the same for every unfinished row: all rows start together).
     */
    static Tensor withoutEos(Tensor last, Options o, int generated) {
        if (generated >= o.minNewTokens() || o.eosIds().length == 0) return last;
        Tensor l = last.to(ScalarType.Float).clone();
        for (long e : o.eosIds()) if (e >= 0 && e < l.size(1)) l.narrow(1, e, 1).fill_(new org.bytedeco.pytorch.Scalar(Double.NEGATIVE_INFINITY));
        return l;
    }

    private static boolean isEos(long id, long[] eos) {
        for (long e : eos) if (e == id) return true;
        return false;
    }

    /** One token per row from last-position logits [B, V]. */
    static long[] sample(Tensor last, Options o, SplittableRandom rng, int v) {
        int b = (int) last.size(0);
        long[] out = new long[b];
        if (o.temperature() <= 0) {
            long[] am = Tensors.toLongs(last.argmax(new org.bytedeco.pytorch.LongOptional(-1), false));
            System.arraycopy(am, 0, out, 0, b);
            return out;
        }
        Tensor probs = last.to(ScalarType.Float).div(Tensors.scalar(o.temperature())).softmax(-1);
        if (o.topP() >= 1) {
            // The draw of draw(p, r*v, v, 1, rng), where the probabilities are (a GPU: only B indices come to the host):
            // the first i whose running f64 sum of the f32 probabilities exceeds u = the count of sums <= u (the sums do
            // not decrease); on the CPU the cumulative sum runs in column order, so the pick is the Java loop's exactly.
            double[] u = new double[b];
            for (int r = 0; r < b; r++) u[r] = rng.nextDouble();
            Tensor cum = probs.to(ScalarType.Double).cumsum(-1);
            Tensor ut = Tensors.fromDoubles(u, b, 1);
            if (probs.is_cuda()) ut = ut.to(probs.device(), ScalarType.Double);
            long[] idx = Tensors.toLongs(cum.le(ut).sum(new long[] {-1}, false, new org.bytedeco.pytorch.ScalarTypeOptional()));
            for (int r = 0; r < b; r++) {
                if (idx[r] < v) out[r] = idx[r];
                else out[r] = lastPositive(Tensors.toFloats(probs.select(0, r))); // u past the total mass (rounding): draw's fallback
            }
            return out;
        }
        T_TensorTensor_T sorted = torch.sort(probs, -1, true);
        float[] sp = Tensors.toFloats(sorted.get0());
        long[] si = Tensors.toLongs(sorted.get1());
        for (int r = 0; r < b; r++) {
            // Keep the smallest prefix of the sorted distribution whose mass reaches topP (at least one token).
            double cum = 0;
            int keep = 0;
            while (keep < v && (keep == 0 || cum < o.topP())) cum += sp[r * v + keep++];
            int k = draw(sp, r * v, keep, cum, rng);
            out[r] = si[r * v + k];
        }
        return out;
    }

    /** The last index with p > 0 (the fallback of {@link #draw} when rounding leaves u past the running sum). */
    private static int lastPositive(float[] p) {
        for (int i = p.length - 1; i >= 0; i--) if (p[i] > 0) return i;
        return p.length - 1;
    }

    /** Index in [0, n) drawn with weights p[off..off+n) of total mass {@code mass}. */
    private static int draw(float[] p, int off, int n, double mass, SplittableRandom rng) {
        double u = rng.nextDouble() * mass, c = 0;
        for (int i = 0; i < n; i++) {
            c += p[off + i];
            if (u < c) return i;
        }
        for (int i = n - 1; i >= 0; i--) if (p[off + i] > 0) return i;
        return n - 1;
    }
}
