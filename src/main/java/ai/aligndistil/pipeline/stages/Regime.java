package ai.aligndistil.pipeline.stages;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.InferenceMode;
import org.bytedeco.pytorch.global.torch.ScalarType;

import ai.aligndistil.kernel.LossConfig;
import ai.aligndistil.kernel.Variant;
import ai.aligndistil.model.CausalLM;
import ai.aligndistil.model.ChatTemplate;
import ai.aligndistil.model.Tensors;
import ai.aligndistil.pipeline.data.Seqs;

/**
 * The regime check of a distillation run (docs/pipeline.md, "The regime rule"): over the run's training rows, the
 * weight alpha and tvd = sum_v |p_dpo - p_second| (mean and 10th/50th/90th percentiles), the per-token
 * KL(pi_dpo || pi_init), and P(EOS) of the run's teacher and of pi_dpo at the first response row (the row that
 * predicts the first response token, whatever {@code --positions} selects), mean and median.
 *
 * <p><b>In regime</b> means: at the official beta2 (10 off-policy, 15 on-policy) the mean weight
 * {@code beta2_official * mean tvd + epsilon} lies in [{@value #ALPHA_MIN}, {@value #ALPHA_MAX}], and the per-token
 * KL(pi_dpo || pi_init) is at most {@value #KL_MAX} nats. It is a property of the DPO / reverse-DPO pair (and of
 * the rows): computed from tvd at the official beta2 whatever the run's own beta2.
 *
 * <p>All arithmetic is in double on the logits as float32; the padded vocabulary columns are kept, as in the kernel.
 */
public final class Regime {
    public static final double ALPHA_MIN = 0.5, ALPHA_MAX = 3.0, KL_MAX = 0.05;

    private final LossConfig cfg;
    private final double officialBeta2;
    private final long eos;
    private final List<Double> alpha = new ArrayList<>(), tvd = new ArrayList<>(), kl = new ArrayList<>();
    private final List<Double> teacherEos = new ArrayList<>(), dpoEos = new ArrayList<>();

    /**
     * @param cfg      the run's loss configuration (its variant, beta, beta2, epsilon, teacher temperature)
     * @param onPolicy whether the run is on-policy (official beta2 15) or off-policy (10)
     * @param eos      the EOS token id
     */
    public Regime(LossConfig cfg, boolean onPolicy, long eos) {
        this.cfg = cfg;
        this.officialBeta2 = officialBeta2(onPolicy);
        this.eos = eos;
    }

    /** The official scripts' beta2: 10 off-policy, 15 on-policy. */
    public static double officialBeta2(boolean onPolicy) { return onPolicy ? 15.0 : 10.0; }

    /** The rule: mean alpha at the official beta2 in [0.5, 3] and per-token KL(pi_dpo || pi_init) at most 0.05. */
    public static boolean inRegime(double meanAlphaOfficial, double klDpoInitPerToken) {
        return meanAlphaOfficial >= ALPHA_MIN && meanAlphaOfficial <= ALPHA_MAX && klDpoInitPerToken <= KL_MAX;
    }

    /** The run's weight for a row of tvd {@code t}, as the kernel computes it. */
    double weight(double t) {
        return switch (cfg.variant()) {
            case ALIGNDISTIL, ADAPTIVE -> cfg.beta2() * t + cfg.epsilon();
            case CONTRAST, THEOREM1 -> cfg.beta() / cfg.beta2();
            case GKD -> 1.0;
        };
    }

    /**
     * One logit row of the DPO model, the second teacher and the initial policy ({@code v} values each from the
     * given offsets). {@code selected}: a training row (alpha, tvd and KL statistics); {@code firstResponseRow}: the
     * row that predicts the first response token (P(EOS) statistics). Either may be false.
     */
    public void addRow(float[] zd, int od, float[] z2, int o2, float[] zi, int oi, int v, boolean selected, boolean firstResponseRow) {
        if (!selected && !firstResponseRow) return;
        double[] ld = logSoftmax(zd, od, v, 1.0), l2 = logSoftmax(z2, o2, v, 1.0), li = logSoftmax(zi, oi, v, 1.0);
        double t = 0, k = 0;
        for (int c = 0; c < v; c++) {
            double pd = Math.exp(ld[c]);
            t += Math.abs(pd - Math.exp(l2[c]));
            if (pd > 0) k += pd * (ld[c] - li[c]);
        }
        double a = weight(t);
        if (selected) {
            tvd.add(t);
            alpha.add(a);
            kl.add(k);
        }
        if (firstResponseRow) {
            double[] z = new double[v];
            for (int c = 0; c < v; c++) {
                double d = zd[od + c], s = z2[o2 + c];
                z[c] = switch (cfg.variant()) {
                    case ALIGNDISTIL, CONTRAST -> d + a * (d - s);
                    case ADAPTIVE, THEOREM1 -> a * d + (1 - a) * s;
                    case GKD -> d;
                };
            }
            double temp = cfg.variant() == Variant.GKD ? 1.0 : cfg.temperature();
            double[] lq = logSoftmax(z, temp);
            teacherEos.add(eos < v ? Math.exp(lq[(int) eos]) : 0.0);
            dpoEos.add(eos < v ? Math.exp(ld[(int) eos]) : 0.0);
        }
    }

    static double[] logSoftmax(float[] z, int off, int v, double temp) {
        double[] d = new double[v];
        for (int c = 0; c < v; c++) d[c] = z[off + c];
        return logSoftmax(d, temp);
    }

    static double[] logSoftmax(double[] z, double temp) {
        double m = Double.NEGATIVE_INFINITY;
        for (double x : z) m = Math.max(m, x / temp);
        double s = 0;
        for (double x : z) s += Math.exp(x / temp - m);
        double lse = m + Math.log(s);
        double[] out = new double[z.length];
        for (int c = 0; c < z.length; c++) out[c] = z[c] / temp - lse;
        return out;
    }

    /**
     * Measures the rows of {@code examples} ({@code pos} selects the training rows) under the DPO model, the second
     * teacher and the initial policy, in chunks of {@code chunk} sequences under inference mode.
     */
    public Regime measure(CausalLM dpo, CausalLM second, CausalLM init, List<ChatTemplate.Example> examples, Seqs.Positions pos, long pad, int chunk) {
        for (int start = 0; start < examples.size(); start += chunk) {
            List<ChatTemplate.Example> part = examples.subList(start, Math.min(examples.size(), start + chunk));
            try (PointerScope s = new PointerScope(); InferenceMode im = new InferenceMode()) {
                Seqs.Packed p = Seqs.pack(part, pad);
                float[] zd = Tensors.toFloats(dpo.forward(p.ids()).to(ScalarType.Float).contiguous());
                float[] z2 = Tensors.toFloats(second.forward(p.ids()).to(ScalarType.Float).contiguous());
                float[] zi = Tensors.toFloats(init.forward(p.ids()).to(ScalarType.Float).contiguous());
                int t = p.width(), v = zd.length / (p.rows() * t);
                boolean[] sel = selected(p, pos);
                for (int i = 0; i < p.rows(); i++)
                    for (int r = 0; r < t; r++) {
                        int off = (i * t + r) * v;
                        addRow(zd, off, z2, off, zi, off, v, sel[i * t + r], r == p.promptLen()[i] - 1);
                    }
            }
        }
        return this;
    }

    /** The rows {@code pos} selects, [B * T]. */
    static boolean[] selected(Seqs.Packed p, Seqs.Positions pos) {
        try (java.lang.foreign.Arena a = java.lang.foreign.Arena.ofConfined()) {
            java.lang.foreign.MemorySegment m = a.allocate((long) p.rows() * p.width());
            Seqs.distillMask(p, pos, m);
            boolean[] out = new boolean[p.rows() * p.width()];
            for (int i = 0; i < out.length; i++) out[i] = m.get(java.lang.foreign.ValueLayout.JAVA_BYTE, i) != 0;
            return out;
        }
    }

    /** The q-quantile (linear interpolation between order statistics, numpy's default) of {@code v}; NaN if empty. */
    public static double quantile(List<Double> v, double q) {
        if (v.isEmpty()) return Double.NaN;
        double[] s = v.stream().mapToDouble(Double::doubleValue).toArray();
        Arrays.sort(s);
        double h = (s.length - 1) * q;
        int lo = (int) Math.floor(h), hi = Math.min(s.length - 1, lo + 1);
        return s[lo] + (h - lo) * (s[hi] - s[lo]);
    }

    static double mean(List<Double> v) {
        double s = 0;
        for (double d : v) s += d;
        return v.isEmpty() ? Double.NaN : s / v.size();
    }

    /**
     * The figures, as written to {@code regime.json} and the demo's {@code results.json}: {@code beta2},
     * {@code mean_alpha}, {@code alpha_p10}, {@code alpha_p90} (the run's own weight), {@code tvd_mean},
     * {@code kl_dpo_init_per_token}, {@code teacher_eos_first_row}, {@code in_regime}, and more.
     */
    public Map<String, Object> summary() {
        Map<String, Object> m = new LinkedHashMap<>();
        double tm = mean(tvd), klm = mean(kl);
        double officialAlpha = officialBeta2 * tm + cfg.epsilon();
        m.put("beta2", cfg.beta2());
        m.put("mean_alpha", mean(alpha));
        m.put("alpha_p10", quantile(alpha, 0.1));
        m.put("alpha_p50", quantile(alpha, 0.5));
        m.put("alpha_p90", quantile(alpha, 0.9));
        m.put("tvd_mean", tm);
        m.put("tvd_p10", quantile(tvd, 0.1));
        m.put("tvd_p50", quantile(tvd, 0.5));
        m.put("tvd_p90", quantile(tvd, 0.9));
        m.put("official_beta2", officialBeta2);
        m.put("mean_alpha_official_beta2", officialAlpha);
        m.put("kl_dpo_init_per_token", klm);
        m.put("teacher_eos_first_row", mean(teacherEos));
        m.put("teacher_eos_first_row_median", quantile(teacherEos, 0.5));
        m.put("dpo_eos_first_row", mean(dpoEos));
        m.put("dpo_eos_first_row_median", quantile(dpoEos, 0.5));
        m.put("rows", (double) tvd.size());
        m.put("sequences", (double) teacherEos.size());
        m.put("in_regime", inRegime(officialAlpha, klm));
        return m;
    }
}
