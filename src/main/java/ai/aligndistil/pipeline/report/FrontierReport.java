package ai.aligndistil.pipeline.report;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import ai.aligndistil.io.Json;
import ai.aligndistil.model.HfCheckpoint;
import ai.aligndistil.pipeline.data.JsonLines;

/**
 * The multi-seed demo report: reads each seed's run folders (their {@code curve.jsonl} and {@code regime.json}) and
 * evaluation ({@code eval.json}), aggregates every figure over the seeds (mean and standard error), scores the
 * paper's claims with the fixed rules of {@link Claims}, and writes {@code results.json}, {@code report.md} (the
 * regime table first, then the frontier chart, then the claims) and {@code charts/frontier.png}.
 */
public final class FrontierReport {
    /** The methods (one chart line each). */
    public static final String DPO = "DPO (beta 0.03, 0.1, 0.3)", AD_OFF = "AlignDistil off-policy (beta2 sweep)",
            AD_ON = "AlignDistil on-policy (beta2 sweep)", W1 = "constant weight 1 (off-policy)", W2 = "constant weight 2 (off-policy)",
            GKD = "on-policy GKD to the DPO model", AD_OFF_OFFICIAL = "AlignDistil off-policy, beta2 10, --positions official",
            AD_ON_OFFICIAL = "AlignDistil on-policy, beta2 15, --positions official";

    /** A run of every seed: folder name, method, and a description for the report. */
    public record RunInfo(String name, String method, String what) {}

    private record CurvePt(double step, double reward, double perWord, double kl, double length) {}

    private final Path dir;
    private final List<Long> seeds;
    private final List<RunInfo> runs;
    private final boolean tiny;
    private final Map<Long, Map<String, List<CurvePt>>> curves = new LinkedHashMap<>();
    private final Map<Long, Map<String, Map<String, Object>>> regimes = new LinkedHashMap<>();
    private final Map<Long, Map<String, Object>> evals = new LinkedHashMap<>();
    private final List<Map<String, Object>> claims = new ArrayList<>();

    public FrontierReport(Path dir, Map<Long, Path> seedDirs, List<RunInfo> runs, boolean tiny) throws IOException {
        this.dir = dir;
        this.seeds = List.copyOf(seedDirs.keySet());
        this.runs = List.copyOf(runs);
        this.tiny = tiny;
        for (var e : seedDirs.entrySet()) {
            Map<String, List<CurvePt>> c = new LinkedHashMap<>();
            Map<String, Map<String, Object>> g = new LinkedHashMap<>();
            for (RunInfo r : runs) {
                Path rd = e.getValue().resolve("models").resolve(r.name());
                List<CurvePt> pts = new ArrayList<>();
                if (Files.exists(rd.resolve("curve.jsonl")))
                    for (Map<String, Object> row : JsonLines.read(rd.resolve("curve.jsonl")))
                        pts.add(new CurvePt(num(row.get("step")), num(row.get("reward")), num(row.get("reward_per_word")), num(row.get("kl_init")), num(row.get("length"))));
                c.put(r.name(), pts);
                if (Files.exists(rd.resolve("regime.json"))) g.put(r.name(), Json.parseObject(Files.readString(rd.resolve("regime.json"))));
            }
            curves.put(e.getKey(), c);
            regimes.put(e.getKey(), g);
            Path ev = e.getValue().resolve("eval.json");
            evals.put(e.getKey(), Files.exists(ev) ? Json.parseObject(Files.readString(ev)) : Map.of());
        }
        scoreClaims();
    }

    static double num(Object o) { return o instanceof Number n ? n.doubleValue() : Double.NaN; }

    // ------------------------------------------------------------------ claims

    private List<Claims.Point> points(long seed, String method, boolean skipStart) {
        List<Claims.Point> l = new ArrayList<>();
        for (RunInfo r : runs) {
            if (!r.method().equals(method)) continue;
            for (CurvePt p : curves.get(seed).get(r.name())) if (!skipStart || p.step() > 0) l.add(new Claims.Point(p.kl(), p.reward()));
        }
        return l;
    }

    private List<String> runsOf(String... methods) {
        List<String> l = new ArrayList<>();
        for (RunInfo r : runs) for (String m : methods) if (r.method().equals(m)) l.add(r.name());
        return l;
    }

    /** Whether every named run that has regime figures is in regime on every seed (a run without figures counts as out). */
    private boolean inRegime(List<String> names) {
        for (long s : seeds)
            for (String n : names) {
                Map<String, Object> g = regimes.get(s).get(n);
                if (g == null || !Boolean.TRUE.equals(g.get("in_regime"))) return false;
            }
        return true;
    }

    private double maxKl(List<Claims.Point> pts) {
        double m = Double.NaN;
        for (Claims.Point p : pts) if (Double.isFinite(p.kl())) m = Double.isNaN(m) ? p.kl() : Math.max(m, p.kl());
        return m;
    }

    private double minKl(List<Claims.Point> pts) {
        double m = Double.NaN;
        for (Claims.Point p : pts) if (Double.isFinite(p.kl())) m = Double.isNaN(m) ? p.kl() : Math.min(m, p.kl());
        return m;
    }

    /** (b) and (d): a method's points against another set's frontier at matched KL. */
    private void gapClaim(String claim, String method, List<String> against, String againstName, List<String> regimeRuns) {
        double[] v = new double[seeds.size()];
        String why = null;
        for (int i = 0; i < seeds.size(); i++) {
            long s = seeds.get(i);
            List<Claims.Point> a = points(s, method, true), b = new ArrayList<>();
            for (String m : against) b.addAll(points(s, m, false));
            v[i] = Claims.meanGap(a, b);
            if (!Double.isFinite(v[i]) && why == null)
                why = String.format("on seed %d no %s point lies within the KL range of %s (which reaches KL %.3f; the method's points start at %.3f)",
                        s, method, againstName, maxKl(b), minKl(a));
        }
        claims.add(Claims.record(claim, "mean over the method's curve points (every knob value and measured step after 0) of its true reward minus "
                + "the frontier of " + againstName + " (upper envelope of all its points, linearly interpolated) at the same KL; points outside that "
                + "frontier's KL range are left out", v, inRegime(regimeRuns), why));
    }

    /** (c): DPO's steps minus the run's steps to reach 90 % of DPO's final reward gain (positive: the run is faster). */
    private void speedClaim(String claim, String run) {
        double[] v = new double[seeds.size()];
        String why = null;
        for (int i = 0; i < seeds.size(); i++) {
            long s = seeds.get(i);
            List<CurvePt> d = curves.get(s).get("dpo"), r = curves.get(s).get(run);
            if (d == null || d.size() < 2 || r == null || r.isEmpty()) {
                v[i] = Double.NaN;
                if (why == null) why = "no curve on seed " + s;
                continue;
            }
            double r0 = d.get(0).reward(), gain = d.get(d.size() - 1).reward() - r0, target = r0 + 0.9 * gain;
            double ds = reach(d, target), rs = reach(r, target);
            v[i] = ds - rs;
            if (why == null) {
                if (!(gain > 0)) why = String.format("DPO gains no true reward on seed %d (%.3f to %.3f)", s, r0, d.get(d.size() - 1).reward());
                else if (Double.isNaN(rs)) why = String.format("%s never reaches the target %.3f (90 %% of DPO's gain) on seed %d", run, target, s);
            }
        }
        claims.add(Claims.record(claim, "per seed, DPO's (beta 0.1) optimiser steps minus the run's to first reach 90 % of DPO's final true-reward "
                + "gain on its curve (positive: the run is faster); both runs take the same number of steps", v, inRegime(List.of(run)), why));
    }

    private static double reach(List<CurvePt> c, double target) {
        double[] st = new double[c.size()], rw = new double[c.size()];
        for (int i = 0; i < c.size(); i++) {
            st[i] = c.get(i).step();
            rw[i] = c.get(i).reward();
        }
        return Claims.firstReach(st, rw, target);
    }

    @SuppressWarnings("unchecked")
    private void scoreClaims() {
        double[] acc = new double[seeds.size()];
        for (int i = 0; i < seeds.size(); i++) {
            Map<String, Object> a = (Map<String, Object>) evals.get(seeds.get(i)).get("reward_accuracy");
            acc[i] = a == null ? Double.NaN : num(a.get("contrastive_accuracy")) - num(a.get("dpo_implicit_accuracy"));
        }
        claims.add(Claims.record("(a) the contrastive reward beta log(pi_dpo / pi_rev) is more accurate than DPO's implicit reward beta log(pi_dpo / pi_init) "
                        + "on held-out pairs", "per seed, contrastive accuracy minus implicit accuracy against the pair labels (fraction of pairs)", acc,
                inRegime(List.of("aligndistil-off")), null));
        gapClaim("(b) off-policy AlignDistil reaches a higher true reward than DPO's frontier at the same KL", AD_OFF, List.of(DPO), "DPO", runsOf(AD_OFF));
        gapClaim("(b) on-policy AlignDistil reaches a higher true reward than DPO's frontier at the same KL", AD_ON, List.of(DPO), "DPO", runsOf(AD_ON));
        gapClaim("(b) off-policy AlignDistil with --positions official, same rule", AD_OFF_OFFICIAL, List.of(DPO), "DPO", runsOf(AD_OFF_OFFICIAL));
        gapClaim("(b) on-policy AlignDistil with --positions official, same rule", AD_ON_OFFICIAL, List.of(DPO), "DPO", runsOf(AD_ON_OFFICIAL));
        speedClaim("(c) off-policy AlignDistil (beta2 10) converges faster than DPO", "aligndistil-off");
        speedClaim("(c) on-policy AlignDistil (beta2 15) converges faster than DPO", "aligndistil-on");
        gapClaim("(d) the adaptive weight (off-policy AlignDistil) beats the constant weights 1 and 2 at matched KL", AD_OFF, List.of(W1, W2),
                "the constant weights 1 and 2", runsOf(AD_OFF, W1, W2));
    }

    public List<Map<String, Object>> claims() { return claims; }

    /** One line per claim: verdict, mean ± SE and the per-seed values. */
    @SuppressWarnings("unchecked")
    public List<String> claimLines() {
        List<String> l = new ArrayList<>();
        for (Map<String, Object> c : claims) {
            StringBuilder b = new StringBuilder(c.get("claim") + ": **" + c.get("verdict") + "**");
            if (c.get("mean") instanceof Number m) b.append(Double.isFinite(num(c.get("se"))) ? String.format(" (%+.3f ± %.3f over %d seeds", m.doubleValue(), num(c.get("se")), seeds.size())
                    : String.format(" (%+.3f, one seed: no standard error", m.doubleValue()));
            else b.append(" (");
            List<Object> ps = (List<Object>) c.get("per_seed");
            b.append(c.get("mean") instanceof Number ? "; per seed " : "per seed ");
            for (int i = 0; i < ps.size(); i++) b.append(i > 0 ? ", " : "").append(ps.get(i) instanceof Number n ? String.format("%+.3f", n.doubleValue()) : "n/a");
            b.append(')');
            if (c.get("reason") != null) b.append(": ").append(c.get("reason"));
            if (Boolean.FALSE.equals(c.get("in_regime"))) b.append(" — a run it is scored on is out of regime on some seed");
            l.add(b.toString());
        }
        return l;
    }

    // ------------------------------------------------------------------ aggregation

    /** Mean and standard error over seeds of every numeric key ({@code key}, {@code key_se}); booleans: true on every seed, and a count. */
    static Map<String, Object> aggregate(List<Map<String, Object>> perSeed) {
        Map<String, Object> out = new LinkedHashMap<>();
        if (perSeed.isEmpty()) return out;
        for (String k : perSeed.get(0).keySet()) {
            Object first = perSeed.get(0).get(k);
            if (first instanceof Boolean) {
                int n = 0;
                for (Map<String, Object> m : perSeed) if (Boolean.TRUE.equals(m.get(k))) n++;
                out.put(k, n == perSeed.size());
                out.put(k + "_seeds", (double) n);
            } else if (first instanceof Number) {
                double[] v = new double[perSeed.size()];
                for (int i = 0; i < v.length; i++) v[i] = num(perSeed.get(i).get(k));
                out.put(k, Claims.mean(v));
                out.put(k + "_se", Claims.se(v));
            }
        }
        return out;
    }

    private List<Map<String, Object>> frontier(long seed, String run) {
        List<Map<String, Object>> l = new ArrayList<>();
        for (CurvePt p : curves.get(seed).get(run)) {
            Map<String, Object> m = new LinkedHashMap<>();
            m.put("step", p.step());
            m.put("kl_init", p.kl());
            m.put("reward", p.reward());
            m.put("reward_per_word", p.perWord());
            m.put("length", p.length());
            l.add(m);
        }
        return l;
    }

    /** A run's frontier points aggregated over seeds, step by step (the steps every seed measured). */
    private List<Map<String, Object>> aggregateFrontier(String run) {
        List<Map<String, Object>> out = new ArrayList<>();
        List<CurvePt> first = curves.get(seeds.get(0)).get(run);
        for (CurvePt p : first) {
            List<Map<String, Object>> at = new ArrayList<>();
            for (long s : seeds)
                for (Map<String, Object> m : frontier(s, run)) if (num(m.get("step")) == p.step()) at.add(m);
            if (at.size() == seeds.size()) out.add(aggregate(at));
        }
        return out;
    }

    @SuppressWarnings("unchecked")
    private Map<String, Object> results(Map<String, Object> timings) {
        Map<String, Object> r = new LinkedHashMap<>();
        r.put("seeds", seeds);
        r.put("tiny", tiny);
        Map<String, Object> rule = new LinkedHashMap<>();
        rule.put("alpha_min", 0.5);
        rule.put("alpha_max", 3.0);
        rule.put("kl_dpo_init_per_token_max", 0.05);
        rule.put("text", "in regime: at the official beta2 (10 off-policy, 15 on-policy) the mean weight beta2 * tvd + eps lies in [0.5, 3], "
                + "and the per-token KL(pi_dpo || pi_init) is at most 0.05 nats");
        r.put("regime_rule", rule);
        Map<String, Object> per = new LinkedHashMap<>();
        for (long s : seeds) {
            Map<String, Object> ps = new LinkedHashMap<>();
            Map<String, Object> rs = new LinkedHashMap<>();
            for (RunInfo run : runs) {
                Map<String, Object> m = new LinkedHashMap<>();
                m.put("method", run.method());
                if (regimes.get(s).containsKey(run.name())) m.put("regime", regimes.get(s).get(run.name()));
                m.put("frontier", frontier(s, run.name()));
                rs.put(run.name(), m);
            }
            ps.put("runs", rs);
            ps.put("models", evals.get(s).get("models"));
            ps.put("reward_accuracy", evals.get(s).get("reward_accuracy"));
            per.put(Long.toString(s), ps);
        }
        r.put("per_seed", per);
        Map<String, Object> agg = new LinkedHashMap<>();
        Map<String, Object> ar = new LinkedHashMap<>();
        for (RunInfo run : runs) {
            Map<String, Object> m = new LinkedHashMap<>();
            m.put("method", run.method());
            List<Map<String, Object>> gs = new ArrayList<>();
            for (long s : seeds) if (regimes.get(s).containsKey(run.name())) gs.add(regimes.get(s).get(run.name()));
            if (gs.size() == seeds.size()) m.put("regime", aggregate(gs));
            m.put("frontier", aggregateFrontier(run.name()));
            ar.put(run.name(), m);
        }
        agg.put("runs", ar);
        Map<String, Object> models = new LinkedHashMap<>();
        Map<String, Object> m0 = (Map<String, Object>) evals.get(seeds.get(0)).get("models");
        if (m0 != null)
            for (String name : m0.keySet()) {
                List<Map<String, Object>> l = new ArrayList<>();
                for (long s : seeds) {
                    Map<String, Object> ms = (Map<String, Object>) evals.get(s).get("models");
                    if (ms != null && ms.get(name) instanceof Map<?, ?> mm) l.add((Map<String, Object>) mm);
                }
                models.put(name, aggregate(l));
            }
        agg.put("models", models);
        List<Map<String, Object>> accs = new ArrayList<>();
        for (long s : seeds) if (evals.get(s).get("reward_accuracy") instanceof Map<?, ?> a) accs.add((Map<String, Object>) a);
        agg.put("reward_accuracy", aggregate(accs));
        r.put("aggregate", agg);
        r.put("claims", claims);
        r.put("timings", timings);
        return r;
    }

    // ------------------------------------------------------------------ output

    /** Writes results.json, charts/frontier.png and report.md into the demo folder. */
    @SuppressWarnings("unchecked")
    public void write(Map<String, Object> timings) throws IOException {
        Map<String, Object> res = results(timings);
        HfCheckpoint.writeAtomically(dir.resolve("results.json"), Json.write(JsonLines.sanitize(res)) + "\n");
        Map<String, Object> aggRuns = (Map<String, Object>) ((Map<String, Object>) res.get("aggregate")).get("runs");
        FrontierChart chart = new FrontierChart("True reward against KL to the initial policy (" + seeds.size() + " seed(s))");
        for (String method : List.of(DPO, AD_OFF, AD_ON, W1, W2, GKD, AD_OFF_OFFICIAL, AD_ON_OFFICIAL)) {
            List<FrontierChart.Point> pts = new ArrayList<>();
            for (RunInfo r : runs) {
                if (!r.method().equals(method)) continue;
                for (Map<String, Object> p : (List<Map<String, Object>>) ((Map<String, Object>) aggRuns.get(r.name())).get("frontier"))
                    pts.add(new FrontierChart.Point(num(p.get("kl_init")), num(p.get("reward")), num(p.get("reward_se"))));
            }
            if (!pts.isEmpty()) chart.add(method, pts);
        }
        chart.write(dir.resolve("charts").resolve("frontier.png"), 1100, 620);
        HfCheckpoint.writeAtomically(dir.resolve("report.md"), markdown(res, aggRuns, timings));
    }

    static String pm(Map<String, Object> m, String k, String f) {
        double v = num(m.get(k)), se = num(m.get(k + "_se"));
        if (!Double.isFinite(v)) return "-";
        return Double.isFinite(se) ? String.format(f + " ± " + f, v, se) : String.format(f, v);
    }

    @SuppressWarnings("unchecked")
    private String markdown(Map<String, Object> res, Map<String, Object> aggRuns, Map<String, Object> timings) {
        StringBuilder b = new StringBuilder();
        int n = seeds.size();
        b.append("# AlignDistil on the built-in task: reward-KL frontiers over ").append(n).append(" seed(s)\n\n");
        b.append("Task seeds ").append(seeds).append(tiny ? " (tiny sizes: a smoke test, not a result)" : "")
                .append(". Every figure is the mean over seeds ± its standard error (sd / sqrt(seeds)). The task is a toy language whose true reward ")
                .append("is known (a centred score per word in context, so length alone earns nothing); see docs/pipeline.md.\n\n");
        b.append("## Regime\n\n");
        b.append("In regime (docs/pipeline.md, \"The regime rule\"): at the official beta2 (10 off-policy, 15 on-policy) the mean weight ")
                .append("beta2 · tvd + eps lies in [0.5, 3] and the per-token KL(pi_dpo ‖ pi_init) is at most 0.05 nats. It is a property of the ")
                .append("DPO / reverse-DPO pair on the run's training rows, whatever the run's own beta2. A claim scored on an out-of-regime run is ")
                .append("OUT OF REGIME. Figures over each run's training rows; P(EOS) at the row that predicts the first response token.\n\n");
        b.append("| run | beta2 | mean alpha | alpha p10 / p90 | tvd | alpha at official beta2 | KL(dpo ‖ init) per token | teacher P(EOS), first row | "
                + "pi_dpo P(EOS), first row | in regime |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
        for (RunInfo r : runs) {
            Map<String, Object> g = (Map<String, Object>) ((Map<String, Object>) aggRuns.get(r.name())).get("regime");
            if (g == null) continue;
            b.append(String.format("| %s | %s | %s | %s / %s | %s | %s | %s | %s | %s | %s (%d/%d seeds) |%n", r.name(), trim(num(g.get("beta2"))),
                    pm(g, "mean_alpha", "%.3f"), String.format("%.3f", num(g.get("alpha_p10"))), String.format("%.3f", num(g.get("alpha_p90"))),
                    pm(g, "tvd_mean", "%.3f"), pm(g, "mean_alpha_official_beta2", "%.2f"), pm(g, "kl_dpo_init_per_token", "%.4f"),
                    pm(g, "teacher_eos_first_row", "%.3f"), pm(g, "dpo_eos_first_row", "%.3f"),
                    Boolean.TRUE.equals(g.get("in_regime")) ? "yes" : "**no**", (long) num(g.get("in_regime_seeds")), n));
        }
        b.append("\n## Reward-KL frontier\n\n![true reward against KL to the initial policy](charts/frontier.png)\n\n");
        b.append("Each method's points are its curve points (every ").append(tiny ? 2 : 4).append(" optimiser steps, one sample per curve prompt at a fixed ")
                .append("seed, every knob value of its sweep), averaged over seeds; bars ± 1 SE of the reward; the line is the upper frontier. ")
                .append("KL is the sequence-level KL(policy ‖ init) summed along the sampled responses.\n\n");
        b.append("## The paper's claims\n\n");
        b.append("Verdict rule: HELD if the mean over seeds exceeds two standard errors in the claim's direction, DID NOT HOLD if it exceeds ")
                .append("two standard errors the other way, NOT DISTINGUISHABLE otherwise (and with one seed); NOT TESTABLE where the statistic ")
                .append("cannot be computed on some seed (the reason is given); OUT OF REGIME where a run the claim is scored on is out of regime.\n\n");
        for (String c : claimLines()) b.append("- ").append(c).append('\n');
        b.append("\nRules of the statistics:\n\n");
        java.util.Set<String> seen = new java.util.HashSet<>();
        for (Map<String, Object> c : claims) {
            String tag = ((String) c.get("claim")).substring(0, 3);
            if (seen.add(tag + c.get("rule"))) b.append("- ").append(tag).append(' ').append(c.get("rule")).append('\n');
        }
        b.append("\n**Nothing was tuned toward a verdict.** The task's settings were chosen by the regime rule alone: the learning rate of DPO, ")
                .append("reverse DPO and distillation is the candidate whose measured mean alpha at beta2 10 and per-token KL(pi_dpo ‖ pi_init) put ")
                .append("every calibration seed in regime (docs/pipeline.md, \"Calibration\"); one epoch and beta 0.1 are the official scripts'; ")
                .append("the sweeps, curve steps and verdict rules were fixed before any claim was scored.\n\n");
        b.append("## Models (final checkpoints, evaluation prompts)\n\n");
        b.append("| model | true reward | reward per word | win vs init | KL(. ‖ init) | KL(. ‖ dpo) | length |\n|---|---:|---:|---:|---:|---:|---:|\n");
        Map<String, Object> models = (Map<String, Object>) ((Map<String, Object>) res.get("aggregate")).get("models");
        for (var e : models.entrySet()) {
            Map<String, Object> m = (Map<String, Object>) e.getValue();
            b.append(String.format("| %s | %s | %s | %s | %s | %s | %s |%n", e.getKey(), pm(m, "reward", "%.3f"), pm(m, "reward_per_word", "%.3f"),
                    pm(m, "win_rate", "%.3f"), pm(m, "kl_init", "%.3f"), pm(m, "kl_dpo", "%.3f"), pm(m, "length", "%.2f")));
        }
        Map<String, Object> acc = (Map<String, Object>) ((Map<String, Object>) res.get("aggregate")).get("reward_accuracy");
        if (acc != null && !acc.isEmpty())
            b.append(String.format("%nReward accuracy on the held-out pairs (pair labels): DPO implicit %s, contrastive %s; against the true-reward order: "
                            + "implicit %s, contrastive %s.%n", pm(acc, "dpo_implicit_accuracy", "%.3f"), pm(acc, "contrastive_accuracy", "%.3f"),
                    pm(acc, "dpo_implicit_accuracy_true_order", "%.3f"), pm(acc, "contrastive_accuracy_true_order", "%.3f")));
        b.append("\nThe true reward of a model is the mean over the evaluation prompts (samples at temperature 1, at least one token before EOS); ")
                .append("reward per word divides each response's reward by its number of tokens before EOS (the length-controlled reward).\n\n");
        b.append("## Runs and time\n\n| run | what |\n|---|---|\n");
        for (RunInfo r : runs) b.append("| ").append(r.name()).append(" | ").append(r.what()).append(" |\n");
        b.append(String.format("%nThe whole demo took %.1f s wall and %.1f s of CPU on %s core(s) (load average at start %s, at the end %s; "
                        + "other jobs shared the machine when the load exceeds the core count); per seed and stage: `results.json` "
                        + "(`timings`). Per-seed folders `seed-N/` hold the task, every model with its `metrics.jsonl`, `curve.jsonl` and `regime.json`, "
                        + "and per-seed charts by step.%n", num(timings.get("total_s")), num(timings.get("cpu_s")), timings.get("cores"), timings.get("load_average_start"),
                timings.get("load_average_end")));
        return b.toString();
    }

    static String trim(double d) {
        if (!Double.isFinite(d)) return "-";
        return d == Math.rint(d) ? Long.toString((long) d) : new java.math.BigDecimal(d).round(new java.math.MathContext(6)).stripTrailingZeros().toPlainString();
    }
}
