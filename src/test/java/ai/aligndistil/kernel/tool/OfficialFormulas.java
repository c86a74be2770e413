package ai.aligndistil.kernel.tool;

/**
 * An independent float64 transcription of the official AlignDistil code (OpenRLHF fork, off-policy trainer:
 * softmax/log_softmax over the full vocabulary, tvd = sum |p_dpo - p_ref| without 1/2, weight = beta2 * tvd + 1e-3,
 * teacher = weight * (z_dpo - z_ref) + z_dpo, coefficient beta / weight, reverse KL, per-sequence masked mean,
 * batch mean), plus the analytic gradient of spec section 4. Written separately from the project's reference
 * (whole tensors, no shared helpers) so replay can be checked against something it does not share code with.
 * Only the aligndistil and gkd variants, f64 throughout, no -inf handling (the test inputs are finite).
 */
final class OfficialFormulas {
    final double loss;
    final double[][] weight, tokenLoss;
    final double[][][] grad;

    OfficialFormulas(double[][][] zs, double[][][] zd, double[][][] zr, boolean[][] mask, double beta, double beta2, double T, boolean gkd) {
        int B = zs.length, S = zs[0].length, V = zs[0][0].length;
        weight = new double[B][S];
        tokenLoss = new double[B][S];
        grad = new double[B][S][V];
        double batchSum = 0;
        int counted = 0;
        for (int b = 0; b < B; b++) {
            int n = 0;
            for (int t = 0; t < S; t++) if (mask[b][t]) n++;
            if (n == 0) continue;
            counted++;
        }
        for (int b = 0; b < B; b++) {
            int n = 0;
            for (int t = 0; t < S; t++) if (mask[b][t]) n++;
            if (n == 0) continue;
            double seqSum = 0;
            for (int t = 0; t < S; t++) {
                if (!mask[b][t]) continue;
                double[] logp = logSoftmax(zs[b][t], 1.0);
                double alpha, coef;
                double[] logq;
                if (gkd) {
                    alpha = 1;
                    coef = 1;
                    logq = logSoftmax(zd[b][t], 1.0);
                } else {
                    double[] pd = softmax(zd[b][t]), pr = softmax(zr[b][t]);
                    double tvd = 0;
                    for (int v = 0; v < V; v++) tvd += Math.abs(pd[v] - pr[v]);
                    alpha = beta2 * tvd + 1e-3;
                    coef = beta / alpha;
                    double[] zstar = new double[V];
                    for (int v = 0; v < V; v++) zstar[v] = alpha * (zd[b][t][v] - zr[b][t][v]) + zd[b][t][v];
                    logq = logSoftmax(zstar, T);
                }
                double kl = 0;
                for (int v = 0; v < V; v++) kl += Math.exp(logp[v]) * (logp[v] - logq[v]);
                weight[b][t] = alpha;
                tokenLoss[b][t] = coef * kl;
                seqSum += coef * kl;
                double c = coef / n / counted;
                for (int v = 0; v < V; v++) grad[b][t][v] = c * Math.exp(logp[v]) * (logp[v] - logq[v] - kl);
            }
            batchSum += seqSum / n;
        }
        loss = counted == 0 ? 0 : batchSum / counted;
    }

    static double[] softmax(double[] z) {
        double m = Double.NEGATIVE_INFINITY;
        for (double x : z) m = Math.max(m, x);
        double[] e = new double[z.length];
        double s = 0;
        for (int i = 0; i < z.length; i++) s += e[i] = Math.exp(z[i] - m);
        for (int i = 0; i < z.length; i++) e[i] /= s;
        return e;
    }

    static double[] logSoftmax(double[] z, double T) {
        double m = Double.NEGATIVE_INFINITY;
        for (double x : z) m = Math.max(m, x / T);
        double s = 0;
        for (double x : z) s += Math.exp(x / T - m);
        double lse = m + Math.log(s);
        double[] out = new double[z.length];
        for (int i = 0; i < z.length; i++) out[i] = z[i] / T - lse;
        return out;
    }
}
