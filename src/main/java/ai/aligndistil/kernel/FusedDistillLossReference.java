package ai.aligndistil.kernel;

import ai.aligndistil.io.DType;
import java.lang.foreign.MemorySegment;

/**
 * The ground truth: the fused AlignDistil loss in plain double-precision Java loops, written to be obviously
 * correct rather than fast. Every backend and every benchmark is checked against it.
 *
 * <p>Per selected row (b, t), with z_s, z_d, z_2 the student, DPO and second-teacher logits:
 * <pre>
 *   log p  = log_softmax(z_s / Ts)          log p_d = log_softmax(z_d)     log p_2 = log_softmax(z_2)
 *   alpha  = beta2 * sum |p_d - p_2| + eps  (aligndistil, adaptive) | beta / beta2 (contrast, theorem1) | 1 (gkd)
 *   z*     = z_d + alpha (z_d - z_2)        (aligndistil, contrast)
 *          = alpha z_d + (1 - alpha) z_2    (adaptive, theorem1)
 *          = z_d                            (gkd)
 *   log q  = log_softmax(z* / T)            (T = 1 for gkd)
 *   K      = sum_v p_v (log p_v - log q_v)
 *   coef   = beta / alpha | beta2 | 1
 *   loss   = (1/N) sum_b (1/n_b) sum_t coef K       grad_v = coef / (n_b N Ts) p_v (log p_v - log q_v - K)
 * </pre>
 * Columns that are -inf in all inputs are outside the vocabulary; anything else non-finite is an error.
 * This is the formula of shared/docs/aligndistil-spec.md sections 2.4, 3 and 4, straight.
 */
public final class FusedDistillLossReference {
    private FusedDistillLossReference() {}

    /** Runs one batch; the batch has been validated. Returns the loss. */
    static double run(FusedDistillLoss.Batch x) {
        final LossConfig cfg = x.op().config();
        final long B = x.batch(), T = x.seq(), V = x.vocab();
        final Variant variant = cfg.variant();
        final boolean second = variant.needsSecondTeacher();

        // Counts per sequence.
        long[] n = new long[(int) B];
        long selected = 0, sequences = 0;
        for (long b = 0; b < B; b++) {
            for (long t = 0; t < T; t++) if (x.selected(b, t)) n[(int) b]++;
            selected += n[(int) b];
            if (n[(int) b] > 0) sequences++;
        }
        double N = x.sequenceDivisor() > 0 ? x.sequenceDivisor() : sequences;

        double[] ls = new double[(int) V], ld = new double[(int) V], l2 = new double[(int) V], lq = new double[(int) V];
        boolean[] in = new boolean[(int) V];
        double loss = 0;
        for (long b = 0; b < B; b++) {
            for (long t = 0; t < T; t++) {
                long token = b * T + t;
                if (!x.selected(b, t)) {
                    x.zeroGradRow(b, t);
                    x.putRowOutputs(token, 0, 0, 0, 0, 0);
                    continue;
                }
                // 1. Read and check the row; columns -inf everywhere are outside the vocabulary.
                int valid = 0;
                for (int v = 0; v < V; v++) {
                    double s = x.studentAt(b, t, v), d = x.dpoAt(b, t, v), r = second ? x.secondAt(b, t, v) : d;
                    boolean bad = Double.isNaN(s) || Double.isNaN(d) || Double.isNaN(r)
                            || s == Double.POSITIVE_INFINITY || d == Double.POSITIVE_INFINITY || r == Double.POSITIVE_INFINITY;
                    boolean ns = s == Double.NEGATIVE_INFINITY, nd = d == Double.NEGATIVE_INFINITY, nr = r == Double.NEGATIVE_INFINITY;
                    if (bad || ns != nd || nd != nr) throw x.nonFinite(token, v);
                    in[v] = !ns;
                    if (in[v]) valid++;
                    ls[v] = s / cfg.studentTemperature();
                    ld[v] = d;
                    l2[v] = r;
                }
                if (valid == 0) throw x.nonFinite(token, -1);
                logSoftmax(ls, in);
                logSoftmax(ld, in);
                if (second) logSoftmax(l2, in);

                // 2. The weight alpha and the coefficient.
                double alpha, coef;
                switch (variant) {
                    case ALIGNDISTIL, ADAPTIVE -> {
                        double tvd = 0;
                        for (int v = 0; v < V; v++) if (in[v]) tvd += Math.abs(Math.exp(ld[v]) - Math.exp(l2[v]));
                        alpha = cfg.beta2() * tvd + cfg.epsilon();
                        coef = cfg.beta() / alpha;
                    }
                    case CONTRAST, THEOREM1 -> {
                        alpha = cfg.beta() / cfg.beta2();
                        coef = cfg.beta2();
                    }
                    default -> {
                        alpha = 1;
                        coef = 1;
                    }
                }

                // 3. The teacher, from the raw logits (the combination is linear; log_softmax removes constants).
                double temp = variant == Variant.GKD ? 1.0 : cfg.temperature();
                for (int v = 0; v < V; v++) {
                    if (!in[v]) continue;
                    double d = x.dpoAt(b, t, v), r = second ? x.secondAt(b, t, v) : d;
                    double z = switch (variant) {
                        case ALIGNDISTIL, CONTRAST -> d + alpha * (d - r);
                        case ADAPTIVE, THEOREM1 -> alpha * d + (1 - alpha) * r;
                        case GKD -> d;
                    };
                    lq[v] = z / temp;
                }
                logSoftmax(lq, in);

                // 4. KL, loss, metrics.
                double K = 0, reward = 0, klD = 0, kl2 = 0;
                for (int v = 0; v < V; v++) {
                    if (!in[v]) continue;
                    double p = Math.exp(ls[v]);
                    K += p * (ls[v] - lq[v]);
                    klD += p * (ls[v] - ld[v]);
                    if (second) {
                        reward += p * cfg.beta() * (ld[v] - l2[v]);
                        kl2 += p * (ls[v] - l2[v]);
                    }
                }
                double scale = coef * (cfg.lengthNorm() ? 1.0 / n[(int) b] : 1.0) / N;
                loss += scale * K;
                x.putRowOutputs(token, alpha, coef * K, reward, klD, kl2);

                // 5. Gradient row.
                double g = scale / cfg.studentTemperature();
                for (int v = 0; v < V; v++) {
                    double val = in[v] ? g * Math.exp(ls[v]) * (ls[v] - lq[v] - K) : 0.0;
                    x.putGrad(b, t, v, val);
                }
            }
        }
        x.setCounts(selected, sequences);
        return loss;
    }

    /** In place: x_v := x_v - logsumexp(x) over the columns marked valid. */
    static void logSoftmax(double[] x, boolean[] valid) {
        double m = Double.NEGATIVE_INFINITY;
        for (int v = 0; v < x.length; v++) if (valid[v] && x[v] > m) m = x[v];
        double s = 0;
        for (int v = 0; v < x.length; v++) if (valid[v]) s += Math.exp(x[v] - m);
        double lse = m + Math.log(s);
        for (int v = 0; v < x.length; v++) if (valid[v]) x[v] -= lse;
    }

    /** Convenience for tests and tools: the reference on contiguous float32 host arrays. */
    public static double run(LossConfig cfg, int B, int T, int V, float[] student, float[] dpo, float[] second,
                             boolean[] mask, float[] grad, float[] weight, float[] tokenLoss, float[] metrics, double seqDivisor) {
        FusedDistillLoss op = FusedDistillLoss.create(cfg, Backend.REFERENCE);
        try (FusedDistillLoss.Batch x = op.newBatch(B, T, V)) {
            x.student(MemorySegment.ofArray(student), DType.F32).dpo(MemorySegment.ofArray(dpo), DType.F32);
            if (second != null) x.second(MemorySegment.ofArray(second), DType.F32);
            if (mask != null) {
                byte[] m = new byte[mask.length];
                for (int i = 0; i < m.length; i++) m[i] = (byte) (mask[i] ? 1 : 0);
                x.mask(MemorySegment.ofArray(m));
            }
            x.grad(MemorySegment.ofArray(grad), DType.F32);
            if (weight != null) x.weights(MemorySegment.ofArray(weight));
            if (tokenLoss != null) x.tokenLosses(MemorySegment.ofArray(tokenLoss));
            if (metrics != null) x.metrics(MemorySegment.ofArray(metrics));
            x.sequenceDivisor(seqDivisor);
            return x.run();
        }
    }
}
