package ai.aligndistil.pipeline.stages;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import ai.aligndistil.io.Json;
import ai.aligndistil.model.CausalLM;
import ai.aligndistil.model.ChatTemplate;
import ai.aligndistil.model.HfCheckpoint;
import ai.aligndistil.pipeline.task.BuiltinTask;
import ai.aligndistil.pipeline.config.Options;
import ai.aligndistil.pipeline.data.DataFiles;
import ai.aligndistil.pipeline.data.JsonLines;

/**
 * {@code eval}: for each model folder, samples {@code --samples} responses per evaluation prompt (temperature
 * 1, top-p 1, a fixed seed) and reports the true reward (mean and spread; built-in task only), the win rate
 * against the initial policy's samples under the true reward (ties count half), the sequence-level KL to the
 * initial policy and to the DPO model (per-token KLs summed along the sampled responses, averaged), and the
 * mean response length. With held-out pairs and the DPO, reverse-DPO and reference models it also reports how
 * often the DPO implicit reward {@code beta log(pi_dpo/pi_ref)} and the contrastive reward
 * {@code beta log(pi_dpo/pi_rev)} prefer the chosen response (the paper's Table 2 question), against the
 * pairs' labels and against the true-reward order.
 */
public final class EvalStage {
    private EvalStage() {}

    public static Options.Spec spec() {
        return new Options.Spec("eval")
                .value("models", null, "models to evaluate, name=DIR,name=DIR (a bare DIR is named by its folder); required")
                .value("init", null, "the initial policy folder: win rate and KL to it")
                .value("dpo", null, "the DPO model folder: KL to it, and the implicit reward of the reward accuracy")
                .value("reverse-dpo", null, "the reverse-DPO model folder: the contrastive reward of the reward accuracy")
                .value("ref", null, "the DPO reference folder for the reward accuracy (default: --init)")
                .value("prompts", null, "evaluation prompts (JSON lines) to sample from")
                .value("pairs", null, "held-out preference pairs (JSON lines) for the reward accuracy")
                .value("task", null, "built-in task folder: adds the true reward and the win rate")
                .value("samples", 4, "responses sampled per prompt")
                .value("seed", 1234, "sampling seed (the same for every model)")
                .value("beta", 0.1, "beta of the implicit and contrastive rewards")
                .value("out", null, "also write the results as JSON to this file")
                .value("dtype", "auto", "weights dtype: auto (the checkpoint's), f32, bf16 or f16")
                .value("max-len", 2048, "longest tokenised pair in tokens for the reward accuracy")
                .value("system-prompt", ChatTemplate.QWEN25_SYSTEM, "system message of the chat template; none or empty for no system message (default: Qwen2.5's)")
                .value("eos", ChatTemplate.IM_END, "end-of-turn token (default: Qwen2.5's)")
                .value("generate-max-len", 1024, "most new tokens per sampled response")
                .value("prompt-max-len", 1024, "prompts are cut on the right to this many tokens")
                .flag("skip-bad-lines", false, "skip malformed data lines and count them, instead of stopping")
                .value("device", "auto", "where the models run: auto (CUDA when it answers, else the CPU; logged), cpu, cuda or cuda:N")
                .value("min-new-tokens", 1, "EOS is impossible for the first N sampled tokens of a response (the official vLLM sampler's min_tokens = 1), tokens");
    }

    /** name=path entries of {@code --models} (a bare path is named by its folder). */
    public static Map<String, Path> models(String spec) {
        Map<String, Path> m = new LinkedHashMap<>();
        for (String s : spec.split(",")) {
            s = s.trim();
            if (s.isEmpty()) continue;
            int eq = s.indexOf('=');
            Path p = Path.of(eq >= 0 ? s.substring(eq + 1) : s);
            m.put(eq >= 0 ? s.substring(0, eq) : p.getFileName().toString(), p);
        }
        return m;
    }

    /** Runs the evaluation; returns {"models": {name: metrics}, "reward_accuracy": {...}}. */
    public static Map<String, Object> run(Options o, PrintStream err) throws IOException {
        Map<String, Path> models = models(o.require("models"));
        Path first = o.has("init") ? o.path("init") : models.values().iterator().next();
        Options so = Stage.common("eval").defaults().with("system-prompt", o.str("system-prompt")).with("eos", o.str("eos")).with("dtype", o.str("dtype"))
                .with("device", o.str("device"));
        Stage.device(so); // a device that cannot be used stops here, before any model is loaded or file written
        Stage.Text text = Stage.Text.of(first, so);
        BuiltinTask task = o.has("task") ? BuiltinTask.load(o.path("task")) : null;
        int k = o.integer("samples"), maxNew = o.integer("generate-max-len"), minNew = o.integer("min-new-tokens");
        long seed = o.longValue("seed");
        Map<String, Object> result = new LinkedHashMap<>();
        Map<String, Object> per = new LinkedHashMap<>();
        result.put("models", per);
        CausalLM init = o.has("init") ? Stage.loadFrozen(o.path("init"), so) : null;
        CausalLM dpo = o.has("dpo") ? Stage.loadFrozen(o.path("dpo"), so) : null;
        if (o.has("prompts")) {
            PromptSet ps = PromptSet.load(o.path("prompts"), text, o.integer("prompt-max-len"), task, o.bool("skip-bad-lines"), err).repeat(k);
            double[] initRewards = null;
            if (init != null && task != null)
                initRewards = ps.rewards(task, Sampler.sample(init, ps.ids(), maxNew, minNew, 1.0, 1.0, seed, text.eos(), text.pad(), 64));
            for (var e : models.entrySet()) {
                long t0 = System.nanoTime();
                CausalLM m = Stage.loadFrozen(e.getValue(), so);
                List<ChatTemplate.Example> s = Sampler.sample(m, ps.ids(), maxNew, minNew, 1.0, 1.0, seed, text.eos(), text.pad(), 64);
                Map<String, Object> r = new LinkedHashMap<>();
                if (task != null) {
                    double[] rw = ps.rewards(task, s);
                    r.put("reward", PromptSet.mean(rw));
                    r.put("reward_std", PromptSet.std(rw));
                    r.put("reward_sample_se", PromptSet.std(rw) / Math.sqrt(rw.length));
                    r.put("reward_per_word", PromptSet.mean(PromptSet.perWord(rw, s)));
                    if (initRewards != null) {
                        double win = 0;
                        for (int i = 0; i < rw.length; i++) win += rw[i] > initRewards[i] ? 1 : rw[i] == initRewards[i] ? 0.5 : 0;
                        r.put("win_rate", win / rw.length);
                    }
                }
                if (init != null) r.put("kl_init", PromptSet.mean(Sampler.sequenceKl(m, init, s, text.pad(), 64)));
                if (dpo != null) r.put("kl_dpo", PromptSet.mean(Sampler.sequenceKl(m, dpo, s, text.pad(), 64)));
                r.put("length", PromptSet.mean(PromptSet.lengths(s)));
                r.put("samples", s.size());
                per.put(e.getKey(), r);
                err.printf("eval: %s done in %.1f s%n", e.getKey(), (System.nanoTime() - t0) / 1e9);
            }
        }
        if (o.has("pairs") && dpo != null && o.has("reverse-dpo")) result.put("reward_accuracy", rewardAccuracy(o, so, text, dpo, init, err));
        if (o.has("out")) HfCheckpoint.writeAtomically(o.path("out"), Json.write(JsonLines.sanitize(result)) + "\n");
        return result;
    }

    private static Map<String, Object> rewardAccuracy(Options o, Options so, Stage.Text text, CausalLM dpo, CausalLM init, PrintStream err) throws IOException {
        CausalLM rev = Stage.loadFrozen(o.path("reverse-dpo"), so);
        CausalLM ref = o.has("ref") ? Stage.loadFrozen(o.path("ref"), so) : init;
        if (ref == null) throw new IllegalArgumentException("eval: reward accuracy needs --ref or --init (the DPO reference)");
        DataFiles.Loaded<DataFiles.Pair> l = DataFiles.pairs(o.path("pairs"), o.bool("skip-bad-lines"));
        DataFiles.Counts c = new DataFiles.Counts();
        List<DataFiles.TokenPair> tp = DataFiles.tokenizePairs(l.records(), text.tpl(), text.tok(), o.integer("max-len"), c);
        List<ChatTemplate.Example> ch = new ArrayList<>(), rj = new ArrayList<>();
        for (DataFiles.TokenPair p : tp) {
            ch.add(p.chosen());
            rj.add(p.rejected());
        }
        double[] dc = Sampler.logProbs(dpo, ch, text.pad(), 64), dr = Sampler.logProbs(dpo, rj, text.pad(), 64);
        double[] fc = Sampler.logProbs(ref, ch, text.pad(), 64), fr = Sampler.logProbs(ref, rj, text.pad(), 64);
        double[] vc = Sampler.logProbs(rev, ch, text.pad(), 64), vr = Sampler.logProbs(rev, rj, text.pad(), 64);
        // True-reward order, when the lines carry the task's scores.
        double[] sc = new double[tp.size()], sr = new double[tp.size()];
        boolean scores = true;
        List<Map<String, Object>> raw = JsonLines.read(o.path("pairs"));
        if (raw.size() == tp.size()) {
            for (int i = 0; i < raw.size(); i++) {
                if (raw.get(i).get("score_chosen") instanceof Number a && raw.get(i).get("score_rejected") instanceof Number b) {
                    sc[i] = a.doubleValue();
                    sr[i] = b.doubleValue();
                } else scores = false;
            }
        } else scores = false;
        double beta = o.num("beta");
        int n = tp.size(), implicitOk = 0, contrastOk = 0, implicitTrue = 0, contrastTrue = 0, decided = 0;
        for (int i = 0; i < n; i++) {
            double imp = beta * ((dc[i] - fc[i]) - (dr[i] - fr[i]));
            double con = beta * ((dc[i] - vc[i]) - (dr[i] - vr[i]));
            if (imp > 0) implicitOk++;
            if (con > 0) contrastOk++;
            if (scores && sc[i] != sr[i]) {
                decided++;
                boolean chosenBetter = sc[i] > sr[i];
                if ((imp > 0) == chosenBetter) implicitTrue++;
                if ((con > 0) == chosenBetter) contrastTrue++;
            }
        }
        Map<String, Object> r = new LinkedHashMap<>();
        r.put("pairs", n);
        r.put("dpo_implicit_accuracy", (double) implicitOk / n);
        r.put("contrastive_accuracy", (double) contrastOk / n);
        if (scores && decided > 0) {
            r.put("dpo_implicit_accuracy_true_order", (double) implicitTrue / decided);
            r.put("contrastive_accuracy_true_order", (double) contrastTrue / decided);
        }
        err.printf("eval: reward accuracy on %d held-out pairs: DPO implicit %.1f %%, contrastive %.1f %%%n", n, 100.0 * implicitOk / n, 100.0 * contrastOk / n);
        return r;
    }
}
