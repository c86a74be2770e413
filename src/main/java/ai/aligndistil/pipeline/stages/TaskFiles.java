package ai.aligndistil.pipeline.stages;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import org.bytedeco.pytorch.global.torch.ScalarType;

import ai.aligndistil.io.Json;
import ai.aligndistil.model.CausalLM;
import ai.aligndistil.model.ChatTemplate;
import ai.aligndistil.model.HfCheckpoint;
import ai.aligndistil.model.ModelConfig;
import ai.aligndistil.pipeline.config.Options;
import ai.aligndistil.pipeline.stages.Sampler;
import ai.aligndistil.pipeline.stages.Stage;
import ai.aligndistil.train.Rng;
import ai.aligndistil.pipeline.task.BuiltinTask;

/**
 * The files of the built-in task. {@link #generate} (command {@code task}) writes, from a seed:
 * <pre>
 *   task.json            the task (seed, words, reward tables)
 *   tokenizer.json       WordLevel tokenizer of the vocabulary
 *   base/                a randomly initialised small Qwen2-architecture model (config.json, weights, tokenizer)
 *   sft.jsonl            prompt/response lines of the base language (flat layout)
 *   pair_prompts.jsonl   prompts for the preference pairs ({"prompt", "split": train|test})
 *   eval_prompts.jsonl   evaluation prompts
 *   pipeline.json        the stages' options tuned for this task (use with --config)
 * </pre>
 * {@link #makePairs} (command {@code task-pairs}) then samples two responses per pair prompt from the initial
 * policy (temperature 1) and labels them with a Bradley-Terry draw on the true reward, as UltraFeedback labels
 * responses of several models with a judge: {@code train_prefs.jsonl} and {@code test_prefs.jsonl} in the
 * UltraFeedback-binarized layout (plus the true scores).
 */
public final class TaskFiles {
    private TaskFiles() {}

    /** Sizes of a generated task. */
    public record Sizes(int words, int sft, int trainPairs, int testPairs, int evalPrompts, int hidden, int layers) {
        public static Sizes demo() { return new Sizes(32, 4096, 1024, 256, 128, 64, 2); }
        public static Sizes tiny() { return new Sizes(24, 256, 64, 32, 16, 32, 1); }
    }

    public static Options.Spec spec() {
        Sizes d = Sizes.demo();
        return new Options.Spec("task")
                .value("out", null, "folder to write the task into; required")
                .value("seed", 1, "seed of the language, the reward, the model's initial weights and the prompts")
                .value("words", d.words(), "syllables in the vocabulary")
                .value("sft-size", d.sft(), "lines of sft.jsonl")
                .value("train-pairs", d.trainPairs(), "prompts of the training preference pairs")
                .value("test-pairs", d.testPairs(), "prompts of the held-out preference pairs")
                .value("eval-prompts", d.evalPrompts(), "evaluation prompts")
                .value("hidden", d.hidden(), "hidden size of the base model")
                .value("layers", d.layers(), "layers of the base model");
    }

    public static Options.Spec pairsSpec() {
        return new Options.Spec("task-pairs")
                .value("task", null, "the task folder (from task); the pairs are written into it; required")
                .value("policy", null, "the initial policy folder (from sft) that samples the two responses; required")
                .value("seed", 1, "seed of sampling and of the Bradley-Terry labels")
                .value("gen-batch", 64, "prompts per sampling batch (memory, not results)");
    }

    public static Path generate(Path dir, long seed, Sizes s) throws IOException {
        Files.createDirectories(dir);
        BuiltinTask task = BuiltinTask.create(seed, s.words());
        task.save(dir.resolve("task.json"));
        task.writeTokenizer(dir.resolve("tokenizer.json"));
        Path base = dir.resolve("base");
        ModelConfig cfg = ModelConfig.fromJson(task.modelConfig(s.hidden(), s.layers()));
        CausalLM m = new CausalLM(cfg, ScalarType.Float).initRandom(seed, 0.02);
        HfCheckpoint.save(m, base);
        Files.copy(dir.resolve("tokenizer.json"), base.resolve("tokenizer.json"), java.nio.file.StandardCopyOption.REPLACE_EXISTING);

        Rng r = new Rng(seed * 31 + 7);
        StringBuilder sft = new StringBuilder();
        for (int i = 0; i < s.sft(); i++) {
            int[] p = task.samplePrompt(r);
            line(sft, Map.of("prompt", task.text(p), "response", task.text(task.sampleResponse(p, r))));
        }
        HfCheckpoint.writeAtomically(dir.resolve("sft.jsonl"), sft.toString());
        Rng rp = new Rng(seed * 31 + 8);
        StringBuilder pp = new StringBuilder();
        for (int i = 0; i < s.trainPairs() + s.testPairs(); i++) {
            Map<String, Object> j = new LinkedHashMap<>();
            j.put("prompt", task.text(task.samplePrompt(rp)));
            j.put("split", i < s.trainPairs() ? "train" : "test");
            line(pp, j);
        }
        HfCheckpoint.writeAtomically(dir.resolve("pair_prompts.jsonl"), pp.toString());
        Rng re = new Rng(seed * 31 + 9);
        StringBuilder ep = new StringBuilder();
        for (int i = 0; i < s.evalPrompts(); i++) line(ep, Map.of("prompt", task.text(task.samplePrompt(re))));
        HfCheckpoint.writeAtomically(dir.resolve("eval_prompts.jsonl"), ep.toString());
        HfCheckpoint.writeAtomically(dir.resolve("pipeline.json"), pipelineConfig(dir) + "\n");
        return dir;
    }

    /**
     * The learning rate of DPO, reverse DPO and distillation on the built-in task, chosen by the regime rule
     * ({@code pipeline.demo.Calibration}; the measurement is in docs/pipeline.md, "Calibration").
     */
    public static final double LR = 1e-4;

    /**
     * The options tuned for the built-in task (a shared config: each stage takes the keys it knows, and its own
     * section). The model is tiny, so the learning rates are far above the 1e-6 of the official scripts for a
     * 1.5B model, and whole micro-batches of 32 sequences replace micro-batch 1.
     */
    static String pipelineConfig(Path dir) {
        dir = dir.toAbsolutePath().normalize();
        Map<String, Object> j = new LinkedHashMap<>();
        j.put("_shared", true);
        j.put("system-prompt", "none");
        j.put("eos", ChatTemplate.IM_END);
        j.put("dtype", "f32");
        j.put("max-len", 64L);
        j.put("prompt-max-len", 32L);
        j.put("generate-max-len", 16L);
        j.put("micro-batch", 32L);
        j.put("batch", 32L);
        j.put("save-steps", 25L);
        j.put("task", dir.toString());
        j.put("eval-prompts", dir.resolve("eval_prompts.jsonl").toString());
        j.put("curve-prompts", 64L);
        j.put("sft", Map.of("lr", 3e-3, "epochs", 3L, "data", dir.resolve("sft.jsonl").toString(), "eval-every", 0L));
        // DPO, reverse DPO and distillation as the official scripts: one learning rate, one epoch, beta 0.1. The
        // learning rate is the task's calibration by the regime rule (docs/pipeline.md, "Calibration").
        j.put("dpo", Map.of("lr", LR, "epochs", 1L, "data", dir.resolve("train_prefs.jsonl").toString(), "eval-every", 4L));
        j.put("distill", Map.of("lr", LR, "epochs", 1L, "data", dir.resolve("train_prefs.jsonl").toString(), "eval-every", 4L));
        j.put("eval", Map.of("prompts", dir.resolve("eval_prompts.jsonl").toString(), "pairs", dir.resolve("test_prefs.jsonl").toString()));
        return Json.write(j);
    }

    private static void line(StringBuilder b, Map<String, Object> j) {
        Json.write(b, j);
        b.append('\n');
    }

    /** Samples the preference pairs from the initial policy and writes train_prefs.jsonl / test_prefs.jsonl. */
    public static void makePairs(Path dir, Path policyDir, long seed, int genBatch, PrintStream err) throws IOException {
        BuiltinTask task = BuiltinTask.load(dir);
        Options o = Stage.common("task-pairs").defaults().with("system-prompt", "none").with("prompt-max-len", 32);
        Stage.Text text = Stage.Text.of(policyDir, o);
        CausalLM policy = Stage.loadFrozen(policyDir, o);
        List<Map<String, Object>> lines = new ArrayList<>();
        for (String s : Files.readAllLines(dir.resolve("pair_prompts.jsonl"))) if (!s.isBlank()) lines.add(Json.parseObject(s));
        List<long[]> prompts = new ArrayList<>();
        for (Map<String, Object> l : lines)
            prompts.add(text.tok().encode(text.tpl().promptText(List.of(ChatTemplate.Message.user((String) l.get("prompt"))))));
        int max = task.maxResponseWords() + 2;
        // At least one token before EOS, as the official vLLM sampler (min_tokens = 1): a response is never empty.
        List<ChatTemplate.Example> a = Sampler.sample(policy, prompts, max, 1, 1.0, 1.0, seed * 2 + 1, BuiltinTask.EOS, BuiltinTask.PAD, genBatch);
        List<ChatTemplate.Example> b = Sampler.sample(policy, prompts, max, 1, 1.0, 1.0, seed * 2 + 2, BuiltinTask.EOS, BuiltinTask.PAD, genBatch);
        Rng r = new Rng(seed * 31 + 10);
        StringBuilder train = new StringBuilder(), test = new StringBuilder();
        int agree = 0;
        for (int i = 0; i < lines.size(); i++) {
            String prompt = (String) lines.get(i).get("prompt");
            String ya = task.responseText(resp(a.get(i))), yb = task.responseText(resp(b.get(i)));
            double ra = task.reward(prompt, ya), rb = task.reward(prompt, yb);
            boolean aWins = r.nextDouble() < 1 / (1 + Math.exp(-(ra - rb)));   // Bradley-Terry draw on the true reward
            if ((ra > rb) == aWins || ra == rb) agree++;
            Map<String, Object> j = new LinkedHashMap<>();
            j.put("prompt", prompt);
            j.put("chosen", conv(prompt, aWins ? ya : yb));
            j.put("rejected", conv(prompt, aWins ? yb : ya));
            j.put("score_chosen", aWins ? ra : rb);
            j.put("score_rejected", aWins ? rb : ra);
            line("train".equals(lines.get(i).get("split")) ? train : test, j);
        }
        HfCheckpoint.writeAtomically(dir.resolve("train_prefs.jsonl"), train.toString());
        HfCheckpoint.writeAtomically(dir.resolve("test_prefs.jsonl"), test.toString());
        err.printf("task-pairs: %d pairs sampled from %s; the Bradley-Terry label agrees with the true reward order on %.1f %%%n",
                lines.size(), policyDir, 100.0 * agree / lines.size());
    }

    private static long[] resp(ChatTemplate.Example e) {
        return java.util.Arrays.copyOfRange(e.ids(), e.promptLength(), e.ids().length);
    }

    private static List<Object> conv(String prompt, String answer) {
        return List.of(Map.of("role", "user", "content", prompt), Map.of("role", "assistant", "content", answer));
    }
}
