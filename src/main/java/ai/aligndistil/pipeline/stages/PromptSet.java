package ai.aligndistil.pipeline.stages;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import ai.aligndistil.model.ChatTemplate;
import ai.aligndistil.model.ChatTemplate.Message;
import ai.aligndistil.model.CausalLM;
import ai.aligndistil.pipeline.task.BuiltinTask;
import ai.aligndistil.pipeline.data.DataFiles;
import ai.aligndistil.train.dist.DistGroup;
import ai.aligndistil.train.dist.RankStreams;

/**
 * Prompts ready for sampling: their ids (chat template with generation prompt, cut to the prompt length
 * limit) and, for the built-in task, the prompt's last word (the context of the first response token's
 * reward).
 */
public record PromptSet(List<long[]> ids, int[] lastWord) {

    public int size() { return ids.size(); }

    public PromptSet first(int n) {
        n = Math.min(n, ids.size());
        return new PromptSet(ids.subList(0, n), java.util.Arrays.copyOf(lastWord, n));
    }

    public static PromptSet of(List<List<Message>> prompts, Stage.Text text, int promptMaxLen, BuiltinTask task) {
        List<long[]> ids = new ArrayList<>();
        int[] last = new int[prompts.size()];
        for (int i = 0; i < prompts.size(); i++) {
            List<Message> p = prompts.get(i);
            ids.add(DataFiles.promptIds(text.tpl(), text.tok(), p, promptMaxLen));
            last[i] = -1;
            if (task != null) {
                int[] w = task.parseWords(p.get(p.size() - 1).content());
                last[i] = w.length == 0 ? -1 : w[w.length - 1];
            }
        }
        return new PromptSet(ids, last);
    }

    public static PromptSet load(Path file, Stage.Text text, int promptMaxLen, BuiltinTask task, boolean skipBad, PrintStream err) throws IOException {
        DataFiles.Loaded<List<Message>> l = DataFiles.prompts(file, skipBad);
        if (l.skipped() > 0) err.println(file + ": " + l.skipped() + " malformed lines skipped");
        return of(l.records(), text, promptMaxLen, task);
    }

    /** True rewards of sampled examples (one per prompt, in order, repeated {@code k} times). */
    public double[] rewards(BuiltinTask task, List<ChatTemplate.Example> samples) {
        double[] r = new double[samples.size()];
        for (int i = 0; i < r.length; i++) {
            ChatTemplate.Example e = samples.get(i);
            long[] resp = java.util.Arrays.copyOfRange(e.ids(), e.promptLength(), e.ids().length);
            r[i] = task.reward(lastWord[i % lastWord.length], resp);
        }
        return r;
    }

    /**
     * Length-controlled reward: each sample's true reward divided by its number of tokens before EOS (at least 1).
     * Sampled responses always end with EOS ({@link Sampler#sample}).
     */
    public static double[] perWord(double[] rewards, List<ChatTemplate.Example> samples) {
        double[] r = new double[rewards.length];
        for (int i = 0; i < r.length; i++) r[i] = rewards[i] / Math.max(1, samples.get(i).ids().length - samples.get(i).promptLength() - 1);
        return r;
    }

    /** Response lengths in tokens (EOS included). */
    public static double[] lengths(List<ChatTemplate.Example> samples) {
        double[] r = new double[samples.size()];
        for (int i = 0; i < r.length; i++) r[i] = samples.get(i).ids().length - samples.get(i).promptLength();
        return r;
    }

    /** This set repeated {@code k} times (for k samples per prompt). */
    public PromptSet repeat(int k) {
        List<long[]> ids2 = new ArrayList<>();
        int[] last2 = new int[ids.size() * k];
        for (int r = 0; r < k; r++) {
            ids2.addAll(ids);
            System.arraycopy(lastWord, 0, last2, r * ids.size(), ids.size());
        }
        return new PromptSet(ids2, last2);
    }

    static double mean(double[] v) {
        double s = 0;
        for (double d : v) s += d;
        return v.length == 0 ? Double.NaN : s / v.length;
    }

    static double std(double[] v) {
        double m = mean(v), s = 0;
        for (double d : v) s += (d - m) * (d - m);
        return v.length < 2 ? 0 : Math.sqrt(s / (v.length - 1));
    }

    /** A training-curve measurement: samples from the policy (fixed seed), true reward, KL to the initial and DPO models, length. */
    public static TrainLoop.CurveFn curve(PromptSet prompts, BuiltinTask task, CausalLM init, CausalLM dpo, int maxNew, int minNew, long eos, long pad, long seed) {
        return (policy, step) -> {
            List<ChatTemplate.Example> s = Sampler.sample(policy, prompts.ids(), maxNew, minNew, 1.0, 1.0, seed, eos, pad, 64);
            java.util.Map<String, Object> m = new java.util.LinkedHashMap<>();
            if (task != null) {
                double[] r = prompts.rewards(task, s);
                m.put("reward", mean(r));
                m.put("reward_std", std(r));
                m.put("samples", r.length);
                m.put("reward_per_word", mean(perWord(r, s)));
            }
            if (init != null) m.put("kl_init", mean(Sampler.sequenceKl(policy, init, s, pad, 64)));
            if (dpo != null) m.put("kl_dpo", mean(Sampler.sequenceKl(policy, dpo, s, pad, 64)));
            m.put("length", mean(lengths(s)));
            return m;
        };
    }

    /**
     * {@link #curve} sharded over the ranks of {@code dist}: each rank samples a contiguous slice of the prompts (rank 0
     * with the single-process seed, the others with their own streams) and the sums behind every mean and spread are
     * added across ranks, so every rank returns the same measurement.
     */
    public static TrainLoop.CurveFn curve(PromptSet prompts, BuiltinTask task, CausalLM init, CausalLM dpo, int maxNew, int minNew, long eos, long pad,
                                          long seed, DistGroup dist) {
        if (!dist.distributed()) return curve(prompts, task, init, dpo, maxNew, minNew, eos, pad, seed);
        return (policy, step) -> {
            int n = prompts.size(), w = dist.worldSize(), r0 = (int) ((long) n * dist.rank() / w), r1 = (int) ((long) n * (dist.rank() + 1) / w);
            PromptSet mine = new PromptSet(prompts.ids().subList(r0, r1), java.util.Arrays.copyOfRange(prompts.lastWord(), r0, r1));
            long rankSeed = dist.rank() == 0 ? seed : RankStreams.seed(seed, dist.rank(), 0);
            List<ChatTemplate.Example> s = mine.size() == 0 ? List.of() : Sampler.sample(policy, mine.ids(), maxNew, minNew, 1.0, 1.0, rankSeed, eos, pad, 64);
            double[] r = task != null ? mine.rewards(task, s) : new double[0];
            double[] sums = {s.size(), sum(r), sumSq(r), init != null && !s.isEmpty() ? sum(Sampler.sequenceKl(policy, init, s, pad, 64)) : 0,
                    dpo != null && !s.isEmpty() ? sum(Sampler.sequenceKl(policy, dpo, s, pad, 64)) : 0, sum(lengths(s)),
                    task != null ? sum(perWord(r, s)) : 0};
            sums = dist.allReduceSum(sums, "all-reduce of the curve");
            double cnt = sums[0], mean = sums[1] / cnt;
            java.util.Map<String, Object> m = new java.util.LinkedHashMap<>();
            if (task != null) {
                m.put("reward", mean);
                m.put("reward_std", cnt < 2 ? 0 : Math.sqrt(Math.max(0, (sums[2] - cnt * mean * mean) / (cnt - 1))));
                m.put("samples", (int) cnt);
                m.put("reward_per_word", sums[6] / cnt);
            }
            if (init != null) m.put("kl_init", sums[3] / cnt);
            if (dpo != null) m.put("kl_dpo", sums[4] / cnt);
            m.put("length", sums[5] / cnt);
            return m;
        };
    }

    /** The sum of the values (the sharded measurements add these across ranks). */
    static double sum(double[] v) {
        double s = 0;
        for (double d : v) s += d;
        return s;
    }

    /** The sum of the squared values. */
    static double sumSq(double[] v) {
        double s = 0;
        for (double d : v) s += d * d;
        return s;
    }
}
