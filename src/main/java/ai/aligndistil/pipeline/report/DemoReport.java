package ai.aligndistil.pipeline.report;

import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import ai.aligndistil.model.HfCheckpoint;
import ai.aligndistil.pipeline.data.JsonLines;

/**
 * The demo's report: the claims of the paper checked against the numbers, the charts (true reward versus
 * step and versus KL to the initial policy, from each run's {@code curve.jsonl}) and {@code report.md}.
 */
public final class DemoReport {
    private final Path dir, models;
    private final Map<String, Object> result;
    private final List<String> runs;

    public DemoReport(Path dir, Path models, Map<String, Object> result, List<String> runs) {
        this.dir = dir;
        this.models = models;
        this.result = result;
        this.runs = runs;
    }

    /** A run's curve: arrays of step, reward, kl_init, and the reward's standard error over the curve prompts (null where not recorded). */
    record Curve(double[] step, double[] reward, double[] kl, double[] rewardSe) {
        Curve(double[] step, double[] reward, double[] kl) { this(step, reward, kl, null); }

        int size() { return step.length; }
    }

    Curve curve(String run) throws IOException {
        List<Map<String, Object>> rows = JsonLines.read(models.resolve(run).resolve("curve.jsonl"));
        double[] s = new double[rows.size()], r = new double[rows.size()], k = new double[rows.size()], sd = new double[rows.size()];
        boolean hasStd = !rows.isEmpty();
        for (int i = 0; i < rows.size(); i++) {
            s[i] = num(rows.get(i).get("step"));
            r[i] = num(rows.get(i).get("reward"));
            k[i] = num(rows.get(i).get("kl_init"));
            // standard error of the mean reward: the per-prompt standard deviation over sqrt(samples)
            sd[i] = num(rows.get(i).get("reward_std")) / Math.sqrt(num(rows.get(i).get("samples")));
            hasStd &= Double.isFinite(sd[i]);
        }
        return new Curve(s, r, k, hasStd ? sd : null);
    }

    static double num(Object o) { return o instanceof Number n ? n.doubleValue() : Double.NaN; }

    @SuppressWarnings("unchecked")
    double metric(String model, String key) {
        Map<String, Object> m = (Map<String, Object>) ((Map<String, Object>) result.get("models")).get(model);
        return m == null ? Double.NaN : num(m.get(key));
    }

    public void charts() throws IOException {
        Charts byStep = Charts.lines("True reward during training (bars: standard error over the curve prompts)",
                "optimiser step", "true reward (task score units, mean over the curve prompts)");
        Charts byKl = Charts.lines("True reward versus KL to the initial policy (training curves)",
                "KL(policy || initial), sequence level (nats)", "true reward (task score units)");
        for (String r : curveRuns()) {
            Curve c = curve(r);
            byStep.add(r, c.step(), c.reward(), c.rewardSe());
            byKl.add(r, c.kl(), c.reward());
        }
        byStep.write(dir.resolve("charts").resolve("reward_vs_step.png"), 900, 520);
        byKl.write(dir.resolve("charts").resolve("reward_vs_kl.png"), 900, 520);
    }

    List<String> curveRuns() {
        List<String> l = new ArrayList<>();
        l.add("dpo");
        l.addAll(runs);
        return l;
    }

    /** The paper's claims, each stated as held / did not hold / could not be tested, with the numbers. */
    @SuppressWarnings("unchecked")
    public List<String> claims() throws IOException {
        List<String> out = new ArrayList<>();
        Map<String, Object> acc = (Map<String, Object>) result.get("reward_accuracy");
        if (acc != null) {
            double imp = num(acc.get("dpo_implicit_accuracy")), con = num(acc.get("contrastive_accuracy"));
            double impT = num(acc.get("dpo_implicit_accuracy_true_order")), conT = num(acc.get("contrastive_accuracy_true_order"));
            out.add(String.format("Contrastive reward more accurate than the DPO implicit reward: %s (held-out pairs: contrastive %.1f %% vs implicit %.1f %% "
                    + "against the pair labels; %.1f %% vs %.1f %% against the true-reward order).", verdict(con > imp), 100 * con, 100 * imp, 100 * conT, 100 * impT));
        }
        double dpoR = metric("dpo", "reward"), dpoKl = metric("dpo", "kl_init");
        for (String r : List.of("aligndistil-off", "aligndistil-on")) {
            double rr = metric(r, "reward"), kl = metric(r, "kl_init");
            Curve c = curve(r);
            // Best curve point whose KL to the initial policy is at most 1.25 x DPO's final KL (comparable KL).
            double best = Double.NEGATIVE_INFINITY, bestKl = Double.NaN;
            for (int i = 1; i < c.size(); i++) if (c.kl()[i] <= 1.25 * dpoKl && c.reward()[i] > best) { best = c.reward()[i]; bestKl = c.kl()[i]; }
            Curve d = curve("dpo");
            double dpoCurveFinal = d.size() == 0 ? Double.NaN : d.reward()[d.size() - 1];
            String cmp = best == Double.NEGATIVE_INFINITY
                    ? String.format("could not be tested at comparable KL: the first curve point after step 0 is already at KL %.2f (DPO ends at %.2f)",
                            c.size() > 1 ? c.kl()[1] : Double.NaN, dpoKl)
                    : String.format("%s at comparable KL (best curve point with KL <= 1.25 x DPO's: reward %.3f at KL %.2f vs DPO's final curve reward %.3f)",
                            verdict(best > dpoCurveFinal), best, bestKl, dpoCurveFinal);
            out.add(String.format("%s reaches a higher true reward than DPO: final %.3f vs %.3f (%s), at KL to the initial policy %.2f vs %.2f; %s.",
                    r, rr, dpoR, verdict(rr > dpoR), kl, dpoKl, cmp));
        }
        // Convergence: optimiser steps until the curve first reaches 90 % of DPO's final reward gain.
        Curve d = curve("dpo");
        if (d.size() > 1) {
            double gain = d.reward()[d.size() - 1] - d.reward()[0], target = d.reward()[0] + 0.9 * gain;
            double dpoSteps = firstReach(d, target);
            for (String r : List.of("aligndistil-off", "aligndistil-on")) {
                double s = firstReach(curve(r), target);
                out.add(String.format("%s converges faster than DPO (steps to 90 %% of DPO's final reward gain, target %.3f): %s (%s vs DPO %s steps).",
                        r, target, gain <= 0 ? "could not be tested (DPO gained no reward)" : verdict(s < dpoSteps),
                        Double.isNaN(s) ? "never" : Long.toString((long) s), Double.isNaN(dpoSteps) ? "never" : Long.toString((long) dpoSteps)));
            }
        }
        double ad = metric("aligndistil-off", "reward"), w1 = metric("contrast-w1-off", "reward"), w2 = metric("contrast-w2-off", "reward");
        out.add(String.format("The adaptive weight beats the constant ones (off-policy): %s (true reward: adaptive %.3f, weight 1 %.3f, weight 2 %.3f; "
                        + "KL to the initial policy %.2f, %.2f, %.2f).", verdict(ad > w1 && ad > w2), ad, w1, w2,
                metric("aligndistil-off", "kl_init"), metric("contrast-w1-off", "kl_init"), metric("contrast-w2-off", "kl_init")));
        double b1 = metric("aligndistil-off-b1", "reward"), b1on = metric("aligndistil-on-b1", "reward");
        if (!Double.isNaN(b1))
            out.add(String.format("Sensitivity (not part of the claims above): with beta2 = 1, the adaptive weight spans [0.001, 2.001] like the constant "
                            + "weights 1 and 2; off-policy it reaches true reward %.3f at KL %.2f (%s the better constant weight, %.3f), on-policy %.3f at KL %.2f; "
                            + "DPO: %.3f at KL %.2f.", b1, metric("aligndistil-off-b1", "kl_init"), b1 > Math.max(w1, w2) ? "above" : "not above", Math.max(w1, w2),
                    b1on, metric("aligndistil-on-b1", "kl_init"), dpoR, dpoKl));
        return out;
    }

    static double firstReach(Curve c, double target) {
        for (int i = 0; i < c.size(); i++) if (c.reward()[i] >= target) return c.step()[i];
        return Double.NaN;
    }

    static Map<String, String> pairs(String... kv) {
        Map<String, String> m = new java.util.HashMap<>();
        for (int i = 0; i + 1 < kv.length; i += 2) m.put(kv[i], kv[i + 1]);
        return m;
    }

    static String verdict(boolean held) { return held ? "HELD" : "DID NOT HOLD"; }

    public void write(String table, List<String> claims, Map<String, Double> seconds, double total, long seed, boolean tiny) throws IOException {
        StringBuilder b = new StringBuilder();
        b.append("# AlignDistil on the built-in task\n\n");
        b.append(String.format("Seed %d%s; the whole run took %.1f s on %d CPU core(s).%n%n", seed, tiny ? " (tiny sizes: a smoke test, not a result)" : "",
                total, Runtime.getRuntime().availableProcessors()));
        b.append("The task is a toy language (a Markov chain over syllables) whose reward is known exactly: a score per token in context, summed "
                + "over the response. The initial policy is trained on the language by `sft`; the preference pairs are two samples of the initial "
                + "policy per prompt, labelled by a Bradley-Terry draw on the true reward. Every model below is evaluated on held-out prompts "
                + "(samples at temperature 1): true reward (mean, sd), win rate against the initial policy's samples, sequence-level KL to "
                + "the initial policy and to the DPO model, mean response length in tokens (EOS included).\n\n");
        b.append("```\n").append(table).append("```\n\n");
        b.append("## The paper's claims on this task\n\n");
        for (String c : claims) b.append("- ").append(c).append('\n');
        b.append("\nThe verdicts are computed from the numbers above by fixed rules (see `DemoReport.claims`); nothing was tuned to make them hold.\n\n");
        b.append("## Charts\n\n![true reward versus step](charts/reward_vs_step.png)\n\n![true reward versus KL](charts/reward_vs_kl.png)\n\n");
        b.append("Curves: every few optimiser steps, one sample per curve prompt (fixed seed) from the current policy; KL summed along the sampled "
                + "response. Each run's per-step metrics (spec section 5) are in `models/<run>/metrics.jsonl`, its curve in `curve.jsonl`.\n\n");
        b.append("## Runs\n\n| run | what | seconds |\n|---|---|---|\n");
        Map<String, String> what = pairs("sft", "initial policy from the base language", "pairs", "preference pairs sampled and labelled",
                "dpo", "DPO, beta 0.1", "dpo-rev", "reverse DPO (chosen and rejected swapped)", "gkd-on", "on-policy reverse-KL distillation to the DPO model",
                "aligndistil-off", "off-policy AlignDistil, beta2 10 (adaptive weight)", "aligndistil-on", "on-policy AlignDistil, beta2 15 (adaptive weight)",
                "contrast-w1-off", "off-policy, constant weight 1 (contrast, beta2 0.1)", "contrast-w2-off", "off-policy, constant weight 2 (contrast, beta2 0.05)",
                "aligndistil-off-b1", "off-policy AlignDistil, beta2 1 (sensitivity check)", "aligndistil-on-b1", "on-policy AlignDistil, beta2 1 (sensitivity check)",
                "eval", "evaluation of every model");
        for (var e : seconds.entrySet()) b.append(String.format("| %s | %s | %.1f |%n", e.getKey(), what.getOrDefault(e.getKey(), ""), e.getValue()));
        b.append("\nOptions of every stage: `task/pipeline.json` (with `--seed`); the demo is deterministic for a seed on the same machine.\n");
        HfCheckpoint.writeAtomically(dir.resolve("report.md"), b.toString());
    }
}
