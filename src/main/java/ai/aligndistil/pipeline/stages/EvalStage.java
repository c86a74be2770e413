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
import ai.aligndistil.train.dist.DistGroup;
import ai.aligndistil.train.dist.RankStreams;

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
                .value("min-new-tokens", 1, "EOS is impossible for the first N sampled tokens of a response (the official vLLM sampler's min_tokens = 1), tokens")
                .value("nproc-per-node", 1, "worker processes to start on this machine, one rank each: the prompts and pairs are split between them and the sums behind every metric added; ignored when torchrun's WORLD_SIZE/RANK/LOCAL_RANK/MASTER_ADDR/MASTER_PORT are set, which join that job instead")
                .value("dist-timeout", 300, "bound on the rendezvous and on every collective of a data-parallel run, seconds; a rank gone makes the others stop within it");
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
        return run(o, err, DistGroup.single());
    }

    /**
     * Runs as one rank of {@code dist}: each rank samples a contiguous slice of the (repeated) prompts and scores a slice of
     * the pairs, rank 0 with the single-process seed and the others with their own streams; every mean, spread, win rate
     * and accuracy is computed from sums added across ranks, so every rank returns the same result; rank 0 writes
     * {@code --out}. With one process the computation is the single-process one, unchanged.
     */
    public static Map<String, Object> run(Options o, PrintStream err, DistGroup dist) throws IOException {
        if (dist.distributed()) return runSharded(o, err, dist);
        Map<String, Path> models = models(o.require("models"));
        Path first = o.has("init") ? o.path("init") : models.values().iterator().next();
        Options so = modelOptions(o);
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

    /**
     * The options the models are loaded with (template, EOS, dtype, device), checked: a device that cannot be used
     * stops here, before any model is loaded or file written.
     */
    private static Options modelOptions(Options o) {
        Options so = Stage.common("eval").defaults().with("system-prompt", o.str("system-prompt")).with("eos", o.str("eos")).with("dtype", o.str("dtype"))
                .with("device", o.str("device"));
        Stage.device(so);
        return so;
    }

    /** {@link #run} over the ranks of {@code dist} (see there). */
    private static Map<String, Object> runSharded(Options o, PrintStream err, DistGroup dist) throws IOException {
        Map<String, Path> models = models(o.require("models"));
        Path first = o.has("init") ? o.path("init") : models.values().iterator().next();
        Options so = modelOptions(o);
        Stage.Text text = Stage.Text.of(first, so);
        BuiltinTask task = o.has("task") ? BuiltinTask.load(o.path("task")) : null;
        int k = o.integer("samples"), maxNew = o.integer("generate-max-len"), minNew = o.integer("min-new-tokens");
        long seed = o.longValue("seed"), rankSeed = dist.rank() == 0 ? seed : RankStreams.seed(seed, dist.rank(), 0);
        Map<String, Object> result = new LinkedHashMap<>();
        Map<String, Object> per = new LinkedHashMap<>();
        result.put("models", per);
        CausalLM init = o.has("init") ? Stage.loadFrozen(o.path("init"), so) : null;
        CausalLM dpo = o.has("dpo") ? Stage.loadFrozen(o.path("dpo"), so) : null;
        if (o.has("prompts")) {
            PromptSet all = PromptSet.load(o.path("prompts"), text, o.integer("prompt-max-len"), task, o.bool("skip-bad-lines"), err).repeat(k);
            int[] range = slice(all.size(), dist);
            PromptSet ps = new PromptSet(all.ids().subList(range[0], range[1]), java.util.Arrays.copyOfRange(all.lastWord(), range[0], range[1]));
            double[] initRewards = null;
            if (init != null && task != null && ps.size() > 0)
                initRewards = ps.rewards(task, Sampler.sample(init, ps.ids(), maxNew, minNew, 1.0, 1.0, rankSeed, text.eos(), text.pad(), 64));
            for (var e : models.entrySet()) {
                long t0 = System.nanoTime();
                CausalLM m = Stage.loadFrozen(e.getValue(), so);
                List<ChatTemplate.Example> s = ps.size() == 0 ? List.of() : Sampler.sample(m, ps.ids(), maxNew, minNew, 1.0, 1.0, rankSeed, text.eos(), text.pad(), 64);
                double[] rw = task != null ? ps.rewards(task, s) : new double[0];
                double win = 0;
                if (initRewards != null) for (int i = 0; i < rw.length; i++) win += rw[i] > initRewards[i] ? 1 : rw[i] == initRewards[i] ? 0.5 : 0;
                double[] sums = {s.size(), PromptSet.sum(rw), PromptSet.sumSq(rw), win, init != null && !s.isEmpty() ? PromptSet.sum(Sampler.sequenceKl(m, init, s, text.pad(), 64)) : 0,
                        dpo != null && !s.isEmpty() ? PromptSet.sum(Sampler.sequenceKl(m, dpo, s, text.pad(), 64)) : 0, PromptSet.sum(PromptSet.lengths(s)),
                        task != null ? PromptSet.sum(PromptSet.perWord(rw, s)) : 0};
                sums = dist.allReduceSum(sums, "all-reduce of the evaluation of " + e.getKey());
                double n = sums[0], mean = sums[1] / n;
                Map<String, Object> r = new LinkedHashMap<>();
                if (task != null) {
                    r.put("reward", mean);
                    double sd = n < 2 ? 0 : Math.sqrt(Math.max(0, (sums[2] - n * mean * mean) / (n - 1)));
                    r.put("reward_std", sd);
                    r.put("reward_sample_se", sd / Math.sqrt(n));
                    r.put("reward_per_word", sums[7] / n);
                    if (init != null) r.put("win_rate", sums[3] / n);
                }
                if (init != null) r.put("kl_init", sums[4] / n);
                if (dpo != null) r.put("kl_dpo", sums[5] / n);
                r.put("length", sums[6] / n);
                r.put("samples", (int) n);
                per.put(e.getKey(), r);
                if (dist.isMain()) err.printf("eval: %s done in %.1f s%n", e.getKey(), (System.nanoTime() - t0) / 1e9);
            }
        }
        if (o.has("pairs") && dpo != null && o.has("reverse-dpo")) result.put("reward_accuracy", rewardAccuracy(o, so, text, dpo, init, err, dist));
        dist.barrier("evaluation");
        if (o.has("out") && dist.isMain()) HfCheckpoint.writeAtomically(o.path("out"), Json.write(JsonLines.sanitize(result)) + "\n");
        return result;
    }

    /** The contiguous slice [from, to) of n items that belongs to this rank. */
    private static int[] slice(int n, DistGroup dist) {
        return new int[] {(int) ((long) n * dist.rank() / dist.worldSize()), (int) ((long) n * (dist.rank() + 1) / dist.worldSize())};
    }

    private static Map<String, Object> rewardAccuracy(Options o, Options so, Stage.Text text, CausalLM dpo, CausalLM init, PrintStream err) throws IOException {
        return rewardAccuracy(o, so, text, dpo, init, err, DistGroup.single());
    }

    private static Map<String, Object> rewardAccuracy(Options o, Options so, Stage.Text text, CausalLM dpo, CausalLM init, PrintStream err, DistGroup dist)
            throws IOException {
        CausalLM rev = Stage.loadFrozen(o.path("reverse-dpo"), so);
        CausalLM ref = o.has("ref") ? Stage.loadFrozen(o.path("ref"), so) : init;
        if (ref == null) throw new IllegalArgumentException("eval: reward accuracy needs --ref or --init (the DPO reference)");
        DataFiles.Loaded<DataFiles.Pair> l = DataFiles.pairs(o.path("pairs"), o.bool("skip-bad-lines"));
        DataFiles.Counts c = new DataFiles.Counts();
        List<DataFiles.TokenPair> tp = DataFiles.tokenizePairs(l.records(), text.tpl(), text.tok(), o.integer("max-len"), c);
        int total = tp.size();
        int[] range = slice(total, dist);
        List<ChatTemplate.Example> ch = new ArrayList<>(), rj = new ArrayList<>();
        for (DataFiles.TokenPair p : tp.subList(range[0], range[1])) {
            ch.add(p.chosen());
            rj.add(p.rejected());
        }
        double[] dc = Sampler.logProbs(dpo, ch, text.pad(), 64), dr = Sampler.logProbs(dpo, rj, text.pad(), 64);
        double[] fc = Sampler.logProbs(ref, ch, text.pad(), 64), fr = Sampler.logProbs(ref, rj, text.pad(), 64);
        double[] vc = Sampler.logProbs(rev, ch, text.pad(), 64), vr = Sampler.logProbs(rev, rj, text.pad(), 64);
        // True-reward order, when the lines carry the task's scores.
        double[] sc = new double[total], sr = new double[total];
        boolean scores = true;
        List<Map<String, Object>> raw = JsonLines.read(o.path("pairs"));
        if (raw.size() == total) {
            for (int i = 0; i < raw.size(); i++) {
                if (raw.get(i).get("score_chosen") instanceof Number a && raw.get(i).get("score_rejected") instanceof Number b) {
                    sc[i] = a.doubleValue();
                    sr[i] = b.doubleValue();
                } else scores = false;
            }
        } else scores = false;
        double beta = o.num("beta");
        int n = total, implicitOk = 0, contrastOk = 0, implicitTrue = 0, contrastTrue = 0, decided = 0;
        for (int j = 0; j < ch.size(); j++) {
            int i = range[0] + j; // index into the whole file (scores), j into this rank's slice
            double imp = beta * ((dc[j] - fc[j]) - (dr[j] - fr[j]));
            double con = beta * ((dc[j] - vc[j]) - (dr[j] - vr[j]));
            if (imp > 0) implicitOk++;
            if (con > 0) contrastOk++;
            if (scores && sc[i] != sr[i]) {
                decided++;
                boolean chosenBetter = sc[i] > sr[i];
                if ((imp > 0) == chosenBetter) implicitTrue++;
                if ((con > 0) == chosenBetter) contrastTrue++;
            }
        }
        if (dist.distributed()) {
            double[] counts = dist.allReduceSum(new double[] {implicitOk, contrastOk, implicitTrue, contrastTrue, decided}, "all-reduce of the reward accuracy");
            implicitOk = (int) counts[0];
            contrastOk = (int) counts[1];
            implicitTrue = (int) counts[2];
            contrastTrue = (int) counts[3];
            decided = (int) counts[4];
        }
        Map<String, Object> r = new LinkedHashMap<>();
        r.put("pairs", n);
        r.put("dpo_implicit_accuracy", (double) implicitOk / n);
        r.put("contrastive_accuracy", (double) contrastOk / n);
        if (scores && decided > 0) {
            r.put("dpo_implicit_accuracy_true_order", (double) implicitTrue / decided);
            r.put("contrastive_accuracy_true_order", (double) contrastTrue / decided);
        }
        if (dist.isMain()) err.printf("eval: reward accuracy on %d held-out pairs: DPO implicit %.1f %%, contrastive %.1f %%%n", n, 100.0 * implicitOk / n, 100.0 * contrastOk / n);
        return r;
    }
}
