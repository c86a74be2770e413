package ai.aligndistil.pipeline.stages;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import org.bytedeco.pytorch.global.torch.ScalarType;

import ai.aligndistil.model.CausalLM;
import ai.aligndistil.model.ChatTemplate;
import ai.aligndistil.model.HfCheckpoint;
import ai.aligndistil.model.HfTokenizer;
import ai.aligndistil.model.Tensors;
import ai.aligndistil.train.Rng;
import ai.aligndistil.pipeline.config.Options;
import ai.aligndistil.pipeline.data.DataFiles;
import ai.aligndistil.pipeline.profiling.ProfileWindow;

/** What the training stages share: their common options, the tokenizer and template, model loading, data order. */
public final class Stage {
    private Stage() {}

    /**
     * Options every training stage takes, with the defaults of the official scripts (spec 6.1 to 6.4): lr 1e-6,
     * 128 sequences (pairs) per optimiser step, micro-batch 1, 1 epoch, warmup 10 %, cosine to 10 % of lr,
     * clipping at 1.0, weight decay 0, max length 2048, seed 42, Qwen2.5's system prompt and EOS.
     * {@code --profile-step N} / {@code --profile-steps N:M} bracket those optimiser steps with
     * cudaProfilerStart/Stop ({@link ProfileWindow}, docs/profiling.md); unset by default.
     */
    public static Options.Spec common(String stage) {
        return new Options.Spec(stage)
                .value("model", null).value("data", null).value("out", null)
                .value("lr", 1e-6).value("batch", 128).value("micro-batch", 1).value("epochs", 1)
                .value("warmup-ratio", 0.1).value("min-lr-ratio", 0.1).value("max-norm", 1.0).value("weight-decay", 0.0)
                .value("max-len", 2048).value("seed", 42).value("save-steps", 50).value("max-steps", 0)
                .value("dtype", "auto")
                .value("system-prompt", ChatTemplate.QWEN25_SYSTEM).value("eos", ChatTemplate.IM_END)
                .value("task", null).value("eval-prompts", null).value("eval-every", 0).value("curve-prompts", 64)
                .value("generate-max-len", 1024).value("prompt-max-len", 1024)
                .flag("skip-bad-lines", false).flag("resume", true).flag("quiet", false)
                .value("profile-step", null).value("profile-steps", null)
                .value("keep-checkpoints", 2, "checkpoints kept in the output folder (the newest N, checkpoint-STEP.safetensors); --resume falls back to an older one when the newest is unreadable");
    }

    /** Tokenizer, chat template and special ids of a model folder. */
    public record Text(HfTokenizer tok, ChatTemplate tpl, long eos, long pad, Path dir) {
        public static Text of(Path modelDir, Options o) throws IOException {
            HfTokenizer tok = HfTokenizer.load(modelDir);
            String sys = o.str("system-prompt");
            ChatTemplate tpl = new ChatTemplate(sys == null || sys.isEmpty() || sys.equals("none") ? null : sys, o.require("eos"));
            long eos = tok.requireTokenId(o.require("eos"));
            long pad = tok.addedTokenId("<|endoftext|>").orElse(eos);
            return new Text(tok, tpl, eos, pad, modelDir);
        }
    }

    /** Loads a model folder in the dtype of {@code --dtype} ({@code auto}: the checkpoint's). */
    public static CausalLM load(Path dir, Options o) throws IOException {
        String d = o.require("dtype");
        ScalarType t = d.equals("auto") ? null : Tensors.parseDtype(d);
        return HfCheckpoint.load(dir, t);
    }

    public static CausalLM loadFrozen(Path dir, Options o) throws IOException {
        return load(dir, o).freeze();
    }

    /** The data order of a run: {@code epochs} shuffles of 0..n-1, each seeded by (seed, epoch). */
    public static int[] order(int n, int epochs, long seed) {
        int[] all = new int[n * epochs];
        for (int e = 0; e < epochs; e++) {
            int[] p = new int[n];
            for (int i = 0; i < n; i++) p[i] = i;
            new Rng(seed * 1_000_003L + e).shuffle(p);
            System.arraycopy(p, 0, all, e * n, n);
        }
        return all;
    }

    /** Optimiser steps of a run: floor(n * epochs / batch) (drop_last). */
    public static long steps(int n, int epochs, int batch) {
        return (long) n * epochs / batch;
    }

    /** Indices of the micro-batches of optimiser step {@code step}. */
    public static List<int[]> microBatches(int[] order, long step, int batch, int micro) {
        List<int[]> out = new ArrayList<>();
        int base = (int) (step * batch);
        for (int s = 0; s < batch; s += micro) {
            int n = Math.min(micro, batch - s);
            int[] idx = new int[n];
            System.arraycopy(order, base + s, idx, 0, n);
            out.add(idx);
        }
        return out;
    }

    static void report(PrintStream err, String stage, String what, DataFiles.Loaded<?> l, DataFiles.Counts c) {
        StringBuilder b = new StringBuilder(stage + ": " + what + ": " + l.records().size() + " records");
        if (l.skipped() > 0) b.append(", ").append(l.skipped()).append(" malformed lines skipped (first: ").append(l.problems().get(0)).append(')');
        if (c != null) b.append("; ").append(c);
        err.println(b);
    }
}
