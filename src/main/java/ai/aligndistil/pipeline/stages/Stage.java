package ai.aligndistil.pipeline.stages;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import org.bytedeco.pytorch.global.torch.ScalarType;

import ai.aligndistil.model.CausalLM;
import ai.aligndistil.model.Devices;
import ai.aligndistil.model.MemoryPlan;
import ai.aligndistil.model.ModelConfig;
import ai.aligndistil.model.ChatTemplate;
import ai.aligndistil.model.HfCheckpoint;
import ai.aligndistil.model.HfTokenizer;
import ai.aligndistil.model.Tensors;
import ai.aligndistil.train.Rng;
import ai.aligndistil.pipeline.config.Options;
import ai.aligndistil.pipeline.config.PipelineException;
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
                .value("model", null, "Hugging Face model folder to start from (config.json, model.safetensors, tokenizer.json); required")
                .value("data", null, "training data, JSON lines (preference pairs, or SFT examples for sft; docs/pipeline.md#data); required")
                .value("out", null, "output folder: the trained model, metrics.jsonl, curve.jsonl, checkpoint.safetensors while running; required")
                .value("lr", 1e-6, "peak learning rate of AdamW (official scripts: 1e-6)")
                .value("batch", 128, "sequences (pairs, or rollout prompts on-policy) per optimiser step (official: 128)")
                .value("micro-batch", 1, "sequences per forward/backward pass; gradients accumulate to --batch (any size gives the same gradient)")
                .value("epochs", 1, "passes over the data (official: 1)")
                .value("warmup-ratio", 0.1, "fraction of the optimiser steps with linear warmup from 0 (official: 0.1)")
                .value("min-lr-ratio", 0.1, "cosine decay ends at this fraction of --lr (official: 0.1)")
                .value("max-norm", 1.0, "clip the global gradient L2 norm to this value; 0 turns clipping off (official: 1.0)")
                .value("weight-decay", 0.0, "AdamW decoupled weight decay (official: 0)")
                .value("max-len", 2048, "longest tokenised sample in tokens; longer ones are cut with EOS last, prompts of max-len - 2 or more tokens dropped (official: 2048)")
                .value("seed", 42, "seed of the data order and of sampling; a run is a function of it (official: 42)")
                .value("save-steps", 50, "write the resumable checkpoint every N optimiser steps")
                .value("max-steps", 0, "stop after N optimiser steps with a checkpoint (0: run every step)")
                .value("dtype", "auto", "weights dtype: auto (the checkpoint's), f32, bf16 or f16; bf16 keeps f32 master weights in AdamW")
                .value("system-prompt", ChatTemplate.QWEN25_SYSTEM, "system message of the chat template; none or empty for no system message (default: Qwen2.5's)")
                .value("eos", ChatTemplate.IM_END, "end-of-turn token that closes every response (default: Qwen2.5's)")
                .value("task", null, "built-in task folder (from task): adds the true reward to the curve and on-policy metrics")
                .value("eval-prompts", null, "prompts file (JSON lines) for the learning curve; with --eval-every")
                .value("eval-every", 0, "write a curve point (true reward, KLs, length) to OUT/curve.jsonl every K optimiser steps (0: never)")
                .value("curve-prompts", 64, "how many of --eval-prompts each curve point samples (one response each, fixed seed)")
                .value("generate-max-len", 1024, "most new tokens per sampled response, on-policy and for the curve; a response cut there ends in EOS")
                .value("prompt-max-len", 1024, "prompts for sampling are cut on the right to this many tokens")
                .flag("skip-bad-lines", false, "skip malformed data lines and count them, instead of stopping before training")
                .flag("resume", true, "resume from OUT/checkpoint.safetensors when it exists (--no-resume starts over)")
                .flag("quiet", false, "no progress bar on stderr")
                .value("profile-step", null, "bracket optimiser step N (counted from 1) with cudaProfilerStart/Stop, for nsys/ncu (docs/profiling.md); unset: none")
                .value("profile-steps", null, "bracket optimiser steps N to M (from 1, inclusive) with cudaProfilerStart/Stop (docs/profiling.md); unset: none")
                .value("device", "auto", "where the models run: auto (CUDA when it answers, else the CPU; logged), cpu, cuda or cuda:N")
                .flag("grad-checkpointing", false, "activation checkpointing per decoder layer: keep only each layer's input, recompute the layer during the backward")
                .value("min-new-tokens", 1, "EOS is impossible for the first N sampled tokens of a response (on-policy rollouts and curves; the official vLLM sampler's min_tokens = 1), tokens")
                .value("nproc-per-node", 1, "worker processes to start on this machine, one rank each (data parallel; --batch stays the global batch and must be divisible by it); ignored when torchrun's WORLD_SIZE/RANK/LOCAL_RANK/MASTER_ADDR/MASTER_PORT are set, which join that job instead")
                .value("dist-timeout", 300, "bound on the rendezvous and on every collective of a data-parallel run, seconds; a rank gone makes the others stop within it")
                .value("dist-bucket-mb", 25, "size cap of one gradient all-reduce bucket, MiB")
                .value("dist-sync", "auto", "gradient synchronisation of a data-parallel run: reducer (libtorch's DDP Reducer, all-reduce overlapping backward; needs one micro-batch per rank and no --fused-linear), bucketed (bucketed all-reduce after the last backward; serves every case), auto (reducer where it serves, else bucketed)")
                .value("keep-checkpoints", 2, "checkpoints kept in the output folder (the newest N, checkpoint-STEP.safetensors); --resume falls back to an older one when the newest is unreadable");
    }


    /**
     * This rank's micro-batches of optimiser step {@code step}: the {@code batch / world} consecutive sequences of the
     * global batch that start at {@code rank * batch / world}, cut into micro-batches of {@code micro}. Rank shards are
     * disjoint and together are the global batch, in order. {@code world} must divide {@code batch}.
     */
    public static List<int[]> shard(int[] order, long step, int batch, int micro, int rank, int world) {
        requireDivisible(batch, world);
        int per = batch / world;
        List<int[]> out = new ArrayList<>();
        long base = step * batch + (long) rank * per;
        for (int s = 0; s < per; s += micro) {
            int n = Math.min(micro, per - s);
            int[] idx = new int[n];
            System.arraycopy(order, (int) (base + s), idx, 0, n);
            out.add(idx);
        }
        return out;
    }

    /** A usage error unless the global batch splits evenly over the ranks. */
    public static void requireDivisible(int batch, int world) {
        if (world < 1) throw PipelineException.usage("--nproc-per-node must be at least 1, got " + world);
        if (batch % world != 0)
            throw PipelineException.refused("--batch " + batch + " is not divisible by the world size " + world + " (--batch is the global batch, split evenly over the ranks)");
    }

    /**
     * The device of {@code --device}, resolved once per value; a device that cannot be used is a usage error (exit 2)
     * naming the device and the cause, raised before any work.
     */
    public static Devices.Choice device(Options o) {
        String spec = o.require("device");
        try {
            return Devices.resolve(spec);
        } catch (Devices.UnavailableException e) {
            throw PipelineException.refused(o.stage() + ": " + e.getMessage());
        }
    }

    /**
     * The startup check of a training stage, before anything is loaded or written: resolves the device
     * ({@link #device}) and compares the memory plan of the run ({@link MemoryPlan}, from the student's config.json,
     * --dtype, --micro-batch, --max-len, the frozen models, --grad-checkpointing, --fused-linear) with what the device
     * has (free device memory on CUDA, MemAvailable on the CPU, or the {@code aligndistil.memory.capacity} property in
     * bytes). A run that will not fit is a usage error with the plan's numbers. Logs the plan in one line.
     *
     * @param sequences sequences per micro-batch (DPO: twice the pairs)
     * @param frozen    models held frozen next to the student
     * @param fusedChunk 0 without the fused-linear loss, else its chunk of rows
     */
    public static Devices.Choice preflight(Options o, Path modelDir, long sequences, int frozen, MemoryPlan.Kind kind, long fusedChunk, PrintStream err)
            throws IOException {
        Devices.Choice dev = device(o);
        ModelConfig c = ModelConfig.read(modelDir);
        String d = o.require("dtype");
        ScalarType t = d.equals("auto") ? ("bfloat16".equals(c.torchDtype()) ? ScalarType.BFloat16 : ScalarType.Float) : Tensors.parseDtype(d);
        int bytes = t.value == ScalarType.BFloat16.value ? 2 : 4;
        MemoryPlan plan = MemoryPlan.of(c, bytes, sequences, o.integer("max-len"), frozen, kind, o.bool("grad-checkpointing"), fusedChunk, dev.cuda());
        if (o.keys().contains("mode") && DistillStage.onPolicy(o)) // rollouts: --gen-batch prompts sampled together with a KV cache
            plan = plan.withRollout(c, bytes, Math.min(o.integer("gen-batch"), o.integer("batch")), o.integer("prompt-max-len") + o.integer("generate-max-len"));
        String prop = System.getProperty(MemoryPlan.CAPACITY_PROPERTY);
        long cap;
        String source;
        if (prop != null && !prop.isBlank()) {
            try {
                cap = Long.parseLong(prop.trim());
            } catch (NumberFormatException e) {
                throw PipelineException.usage(o.stage() + ": -D" + MemoryPlan.CAPACITY_PROPERTY + " must be a number of bytes, got '" + prop + "'");
            }
            source = "-D" + MemoryPlan.CAPACITY_PROPERTY;
        } else {
            cap = Devices.freeBytes(dev);
            source = dev.cuda() ? "free on " + dev.name() : "MemAvailable";
        }
        String line = String.format(java.util.Locale.ROOT, "%s: device %s; memory plan %s; %s %s", o.stage(), dev.name(), plan.describe(), source,
                cap < 0 ? "unknown (no check)" : String.format(java.util.Locale.ROOT, "%.2f GiB", cap / (double) MemoryPlan.GIB));
        if (cap >= 0 && plan.total() > cap)
            throw PipelineException.refused(line + ": the run will not fit; lower --micro-batch or --max-len, or use --dtype bf16, --grad-checkpointing"
                    + (kind == MemoryPlan.Kind.DISTILL ? ", --fused-linear" : "") + " (docs/model.md, Memory plan)");
        err.println(line);
        return dev;
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
        CausalLM m = HfCheckpoint.load(dir, t).to(device(o));
        return o.keys().contains("grad-checkpointing") && o.bool("grad-checkpointing") ? m.checkpointing(true) : m;
    }

    public static CausalLM loadFrozen(Path dir, Options o) throws IOException {
        return load(dir, o).checkpointing(false).freeze();
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
