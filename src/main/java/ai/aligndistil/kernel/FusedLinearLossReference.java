package ai.aligndistil.kernel;

/**
 * The ground truth of {@link CudaFusedLinearLoss}: the UNFUSED computation in plain double-precision loops, written
 * to be obviously correct rather than fast. Full logits {@code zs = Xs Ws^T} (and the teachers', unless given as
 * logits), the fused distill loss of {@link FusedDistillLossReference} with its own normalisation (1/n_b, 1/N),
 * {@code G = d loss / d zs}, then {@code dXs = G Ws} and {@code dWs = dWs0 + G^T Xs}. Row-major arrays:
 * hidden states [N, H], heads [V, H], logits [N, V], N = B * T, row n = b * T + t.
 *
 * <p>It materialises everything the GPU kernel never does ([N, V] logits and G); meant for small test shapes.
 */
public final class FusedLinearLossReference {
    private FusedLinearLossReference() {}

    /**
     * The outcome. On a data error ({@code code != 0}: non-finite or empty row, see aligndistil.h) the loss,
     * dXs, weight and token_loss are zero and dWs is dWs0; {@code token} = b*T + t, {@code column} = v or -1.
     */
    public record Result(double loss, double[] dXs, double[] dWs, double[] g, double[] weight, double[] tokenLoss,
                         long selected, int code, long token, long column) {}

    /** Z[N, V] = X[N, H] W[V, H]^T. */
    public static double[] logits(double[] x, double[] w, int n, int h, int v) {
        double[] z = new double[n * v];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < v; j++) {
                double a = 0;
                for (int k = 0; k < h; k++) a += x[i * h + k] * w[j * h + k];
                z[i * v + j] = a;
            }
        return z;
    }

    /**
     * Each teacher is given as hidden + head ({@code zd} null) or as logits {@code zd} (hidden and head null).
     * {@code mask} null selects every row; {@code seqDivisor} &gt; 0 replaces the number of sequences with a
     * selected row; {@code dWs0} null starts the accumulator at zero.
     */
    public static Result run(LossConfig cfg, int B, int T, int H, int V, double[] xs, double[] ws,
                             double[] xd, double[] wd, double[] zd, double[] x2, double[] w2, double[] z2,
                             boolean[] mask, double seqDivisor, double[] dWs0) {
        final int N = B * T;
        final boolean second = cfg.variant().needsSecondTeacher();
        double[] zs = logits(xs, ws, N, H, V);
        double[] d = zd != null ? zd : logits(xd, wd, N, H, V);
        double[] r = !second ? null : z2 != null ? z2 : logits(x2, w2, N, H, V);
        double[] dW = dWs0 != null ? dWs0.clone() : new double[V * H];
        double[] dX = new double[N * H];
        double[] g = new double[N * V];
        double[] weight = new double[N], tokenLoss = new double[N];

        long[] nb = new long[B];
        long selected = 0, sequences = 0;
        for (int b = 0; b < B; b++) {
            for (int t = 0; t < T; t++) if (mask == null || mask[b * T + t]) nb[b]++;
            selected += nb[b];
            if (nb[b] > 0) sequences++;
        }
        final double div = seqDivisor > 0 ? seqDivisor : sequences;
        final Variant variant = cfg.variant();
        final double tq = variant == Variant.GKD ? 1.0 : cfg.temperature();
        double[] logp = new double[V], logpd = new double[V], logp2 = new double[V], logq = new double[V], zt = new double[V];
        boolean[] in = new boolean[V];
        double loss = 0;
        for (int n = 0; n < N; n++) {
            if (mask != null && !mask[n]) continue;
            boolean any = false;
            for (int v = 0; v < V; v++) {
                double s = zs[n * V + v], dd = d[n * V + v], rr = second ? r[n * V + v] : dd;
                boolean fin = Double.isFinite(s) && Double.isFinite(dd) && Double.isFinite(rr);
                boolean out = s == Double.NEGATIVE_INFINITY && dd == Double.NEGATIVE_INFINITY && rr == Double.NEGATIVE_INFINITY;
                if (!fin && !out) return failed(2, n, v, N, H, V, dWs0, selected);
                in[v] = fin;
                any |= fin;
            }
            if (!any) return failed(3, n, -1, N, H, V, dWs0, selected);
            logSoftmax(zs, n * V, 1.0 / cfg.studentTemperature(), in, logp);
            logSoftmax(d, n * V, 1.0, in, logpd);
            if (second) logSoftmax(r, n * V, 1.0, in, logp2);
            double alpha;
            switch (variant) {
                case ALIGNDISTIL, ADAPTIVE -> {
                    double tvd = 0;
                    for (int v = 0; v < V; v++) if (in[v]) tvd += Math.abs(Math.exp(logpd[v]) - Math.exp(logp2[v]));
                    alpha = cfg.beta2() * tvd + cfg.epsilon();
                }
                case CONTRAST, THEOREM1 -> alpha = cfg.beta() / cfg.beta2();
                default -> alpha = 1.0;
            }
            for (int v = 0; v < V; v++) {
                if (!in[v]) { zt[v] = Double.NEGATIVE_INFINITY; continue; }
                double dd = d[n * V + v], rr = second ? r[n * V + v] : dd;
                zt[v] = switch (variant) {
                    case ALIGNDISTIL, CONTRAST -> dd + alpha * (dd - rr);
                    case ADAPTIVE, THEOREM1 -> alpha * dd + (1 - alpha) * rr;
                    default -> dd;
                };
            }
            logSoftmax(zt, 0, 1.0 / tq, in, logq);
            double k = 0;
            for (int v = 0; v < V; v++) if (in[v]) k += Math.exp(logp[v]) * (logp[v] - logq[v]);
            double coef = switch (variant) {
                case ALIGNDISTIL, ADAPTIVE -> cfg.beta() / alpha;
                case CONTRAST, THEOREM1 -> cfg.beta2();
                default -> 1.0;
            };
            double c = coef * (cfg.lengthNorm() ? 1.0 / nb[n / T] : 1.0) / div;
            loss += c * k;
            weight[n] = alpha;
            tokenLoss[n] = coef * k;
            for (int v = 0; v < V; v++)
                if (in[v]) g[n * V + v] = c / cfg.studentTemperature() * Math.exp(logp[v]) * (logp[v] - logq[v] - k);
        }
        for (int n = 0; n < N; n++)
            for (int v = 0; v < V; v++) {
                double gv = g[n * V + v];
                if (gv == 0) continue;
                for (int h = 0; h < H; h++) {
                    dX[n * H + h] += gv * ws[v * H + h];
                    dW[v * H + h] += gv * xs[n * H + h];
                }
            }
        return new Result(loss, dX, dW, g, weight, tokenLoss, selected, 0, -1, -1);
    }

    private static Result failed(int code, long token, long column, int N, int H, int V, double[] dWs0, long selected) {
        return new Result(0, new double[N * H], dWs0 != null ? dWs0.clone() : new double[V * H], new double[N * V],
                new double[N], new double[N], selected, code, token, column);
    }

    /** out[v] = log_softmax(x[off + v] * scale) over the columns in {@code in}; -inf elsewhere. */
    private static void logSoftmax(double[] x, int off, double scale, boolean[] in, double[] out) {
        int V = out.length;
        double m = Double.NEGATIVE_INFINITY, z = 0;
        for (int v = 0; v < V; v++) if (in[v]) m = Math.max(m, x[off + v] * scale);
        for (int v = 0; v < V; v++) if (in[v]) z += Math.exp(x[off + v] * scale - m);
        double lse = m + Math.log(z);
        for (int v = 0; v < V; v++) out[v] = in[v] ? x[off + v] * scale - lse : Double.NEGATIVE_INFINITY;
    }
}
