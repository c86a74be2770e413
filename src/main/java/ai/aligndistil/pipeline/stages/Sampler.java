package ai.aligndistil.pipeline.stages;

import java.util.ArrayList;
import java.util.List;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.InferenceMode;
import org.bytedeco.pytorch.ScalarTypeOptional;
import org.bytedeco.pytorch.Tensor;

import ai.aligndistil.model.CausalLM;
import ai.aligndistil.model.ChatTemplate;
import ai.aligndistil.model.Generator;
import ai.aligndistil.model.Tensors;
import ai.aligndistil.pipeline.data.Seqs;

/**
 * Sampling responses from a policy (temperature 1, top-p 1 by default, spec 6.3) and sequence-level
 * quantities of sampled sequences under other models: response log-probabilities and the KL of one model to
 * another summed over the response positions.
 */
public final class Sampler {
    private Sampler() {}

    /**
     * One response per prompt, as training examples (prompt ids + response ids). A response that did not end
     * with EOS gets its last token overwritten with EOS (spec 6.3). Prompts are processed in chunks of
     * {@code chunk}; chunk {@code c} samples with seed {@code seed + c} (so the result depends only on the seed,
     * the prompts and the model).
     */
    public static List<ChatTemplate.Example> sample(CausalLM m, List<long[]> prompts, int maxNew, double temperature, double topP,
                                                    long seed, long eos, long pad, int chunk) {
        return sample(m, prompts, maxNew, 0, temperature, topP, seed, eos, pad, chunk);
    }

    /**
     * As {@link #sample(CausalLM, List, int, double, double, long, long, long, int)}, with EOS impossible for the
     * first {@code minNew} tokens of a response ({@code --min-new-tokens}; the official vLLM sampler's
     * {@code min_tokens = 1}).
     */
    public static List<ChatTemplate.Example> sample(CausalLM m, List<long[]> prompts, int maxNew, int minNew, double temperature, double topP,
                                                    long seed, long eos, long pad, int chunk) {
        List<ChatTemplate.Example> out = new ArrayList<>();
        for (int c = 0, start = 0; start < prompts.size(); c++, start += chunk) {
            List<long[]> part = prompts.subList(start, Math.min(prompts.size(), start + chunk));
            Generator.Result r = Generator.generate(m, part, new Generator.Options(maxNew, temperature, topP, seed + c, new long[] {eos}, pad, Math.min(minNew, maxNew)));
            for (int i = 0; i < part.size(); i++) {
                long[] resp = r.tokens().get(i);
                if (resp.length == 0) resp = new long[] {eos};
                else if (!r.finished()[i]) resp[resp.length - 1] = eos;
                long[] p = part.get(i);
                long[] ids = new long[p.length + resp.length];
                System.arraycopy(p, 0, ids, 0, p.length);
                System.arraycopy(resp, 0, ids, p.length, resp.length);
                out.add(new ChatTemplate.Example(ids, p.length));
            }
        }
        return out;
    }

    /** Response log-probabilities log m(y|x) (sum over response tokens) of each example, under inference mode. */
    public static double[] logProbs(CausalLM m, List<ChatTemplate.Example> ex, long pad, int chunk) {
        double[] out = new double[ex.size()];
        for (int start = 0; start < ex.size(); start += chunk) {
            List<ChatTemplate.Example> part = ex.subList(start, Math.min(ex.size(), start + chunk));
            try (PointerScope s = new PointerScope(); InferenceMode im = new InferenceMode()) {
                Seqs.Packed p = Seqs.pack(part, pad);
                float[] lp = Tensors.toFloats(Seqs.responseLogProbs(m.forward(p.ids()), p));
                for (int i = 0; i < lp.length; i++) out[start + i] = lp[i];
            }
        }
        return out;
    }

    /**
     * Per example, the sum over the response positions (rows P-1..S-2) of KL(p(.|s_t) || q(.|s_t)): the
     * sequence-level KL of p to q estimated along the sampled path (an unbiased estimate of KL(p||q) over
     * whole responses when the examples are sampled from p, with less variance than the log-ratio).
     */
    public static double[] sequenceKl(CausalLM p, CausalLM q, List<ChatTemplate.Example> ex, long pad, int chunk) {
        double[] out = new double[ex.size()];
        for (int start = 0; start < ex.size(); start += chunk) {
            List<ChatTemplate.Example> part = ex.subList(start, Math.min(ex.size(), start + chunk));
            try (PointerScope s = new PointerScope(); InferenceMode im = new InferenceMode()) {
                Seqs.Packed pk = Seqs.pack(part, pad);
                int w = pk.width() - 1;
                Tensor lp = p.forward(pk.ids()).narrow(1, 0, w).to(org.bytedeco.pytorch.global.torch.ScalarType.Float).log_softmax(-1);
                Tensor lq = q.forward(pk.ids()).narrow(1, 0, w).to(org.bytedeco.pytorch.global.torch.ScalarType.Float).log_softmax(-1);
                Tensor kl = lp.exp().mul(lp.sub(lq)).sum(new long[] {2}, false, new ScalarTypeOptional());
                float[] v = Tensors.toFloats(kl.mul(Seqs.targetMask(pk, kl)).sum(new long[] {1}, false, new ScalarTypeOptional()));
                for (int i = 0; i < v.length; i++) out[start + i] = v[i];
            }
        }
        return out;
    }
}
