package ai.aligndistil.pipeline.stages;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;

import org.bytedeco.javacpp.PointerScope;

import ai.aligndistil.kernel.Nvtx;
import ai.aligndistil.model.CausalLM;
import ai.aligndistil.model.Devices;
import ai.aligndistil.model.HfCheckpoint;
import ai.aligndistil.train.AdamW;
import ai.aligndistil.train.GradClip;
import ai.aligndistil.train.LrSchedule;
import ai.aligndistil.train.TrainCheckpoint;
import ai.aligndistil.train.dist.DistGroup;
import ai.aligndistil.train.dist.GradSync;
import ai.aligndistil.train.dist.ReducerSync;
import ai.aligndistil.train.dist.WeightChecksum;
import ai.aligndistil.pipeline.config.Options;
import ai.aligndistil.pipeline.config.PipelineException;
import ai.aligndistil.pipeline.data.JsonLines;
import ai.aligndistil.pipeline.profiling.ProfileWindow;
import ai.aligndistil.pipeline.profiling.StepRanges;

/**
 * The optimiser loop shared by every training stage: AdamW (betas 0.9/0.95, eps 1e-8, weight decay 0),
 * linear warmup then cosine to {@code min-lr-ratio x lr}, global-norm clipping, one JSON line of metrics per
 * optimiser step ({@code metrics.jsonl}), an optional curve of the true reward and KLs ({@code curve.jsonl}),
 * a progress bar, an atomic checkpoint every {@code save-steps} steps ({@code checkpoint.safetensors}: model,
 * optimiser, step) and resumption from it. The data order is a function of the seed and the step, so a resumed
 * run repeats exactly what an uninterrupted one does. At the end the model is saved into the output folder
 * (config.json, model.safetensors, tokenizer files) and the checkpoint removed.
 *
 * <p>Each phase runs inside an NVTX range ({@link StepRanges}: {@code <family>/step}, {@code /clip},
 * {@code /optimizer_step}, {@code /checkpoint}, {@code /eval}; the stages add the forward, loss and backward
 * ranges), and {@code --profile-step N} / {@code --profile-steps N:M} bracket those steps with
 * cudaProfilerStart/Stop ({@link ProfileWindow}).
 *
 * <p>Data parallel ({@link #parallel}): every rank runs this loop on its shard of each global batch; after the
 * step's backward passes the gradients are summed across ranks ({@link GradSync}), so clipping and AdamW see the
 * global gradient and every rank takes the same step. At the start the ranks check that they were given the same
 * options and hold the same weights; metrics, curves, checkpoints and the final model are written by rank 0 only,
 * after a barrier. {@code comm_s} in the metrics is the step's time in collectives.
 */
public final class TrainLoop {
    /** One optimiser step's forward/backward passes; returns the step's metrics. */
    public interface StepFn {
        Map<String, Object> step(long step) throws IOException;
    }

    /** Measures a training curve point (true reward, KLs) for the policy as it is. */
    public interface CurveFn {
        Map<String, Object> measure(CausalLM policy, long step) throws IOException;
    }

    static final String CHECKPOINT = "checkpoint.safetensors";

    private final String stage;
    private final Path out;
    private final CausalLM policy;
    private final Path tokenizerDir;
    private final Options o;
    private final long total;
    private final PrintStream err;
    private CurveFn curve;
    private DistGroup dist = DistGroup.single();

    public TrainLoop(String stage, Path out, CausalLM policy, Path tokenizerDir, Options o, long totalSteps, PrintStream err) {
        if (totalSteps <= 0) throw new IllegalArgumentException(stage + ": no optimiser step to take (the data is smaller than one batch of --batch sequences)");
        this.stage = stage;
        this.out = out;
        this.policy = policy;
        this.tokenizerDir = tokenizerDir;
        this.o = o;
        this.total = totalSteps;
        this.err = err;
    }

    public TrainLoop curve(CurveFn c) {
        this.curve = c;
        return this;
    }

    public long totalSteps() { return total; }

    /** Runs data-parallel in {@code g} (the stage shards its batches by {@code g}'s rank). */
    public TrainLoop parallel(DistGroup g) {
        this.dist = g;
        return this;
    }

    /** Runs to the end (or to {@code max-steps}); returns the number of optimiser steps completed. */
    public long run(StepFn fn) throws IOException {
        Files.createDirectories(out);
        AdamW opt = new AdamW(policy.namedParameters(), AdamW.Options.spec().withWeightDecay(o.num("weight-decay")));
        LrSchedule sched = new LrSchedule(o.num("lr"), total, (long) Math.ceil(o.num("warmup-ratio") * total), o.num("min-lr-ratio") * o.num("lr"));
        JsonLines metrics = new JsonLines(out.resolve("metrics.jsonl"));
        JsonLines curveLog = new JsonLines(out.resolve("curve.jsonl"));
        Path ckpt = out.resolve(CHECKPOINT);
        long step = 0;
        boolean main = dist.isMain();
        if (Files.exists(ckpt) && o.bool("resume")) {
            TrainCheckpoint.State st = TrainCheckpoint.load(ckpt, policy.namedParameters(), opt);
            step = st.step();
            if (!stage.equals(st.extra().get("stage")))
                throw new IOException(ckpt + ": a checkpoint of stage '" + st.extra().get("stage") + "', not " + stage);
            if (main) {
                metrics.truncateAfter(step);
                curveLog.truncateAfter(step);
                err.println(stage + ": resuming from " + ckpt + " at step " + step + "/" + total);
            }
        } else if (main) {
            Files.deleteIfExists(metrics.file());
            Files.deleteIfExists(curveLog.file());
        }
        GradSync sync = null;
        ReducerSync reducer = null;
        if (dist.distributed()) {
            Map<String, String> shared = new java.util.TreeMap<>(o.asMap());
            shared.remove("device"); // per rank under NCCL (cuda:LOCAL_RANK); everything else must agree
            dist.requireSame("options", WeightChecksum.ofOptions(shared));
            dist.requireSame("weights at step " + step, WeightChecksum.of(policy.namedParameters()));
            long cap = (long) (o.num("dist-bucket-mb") * (1 << 20));
            if (useReducer(o, dist.worldSize())) reducer = new ReducerSync(dist, policy.namedParameters().values(), cap);
            else sync = new GradSync(dist, policy.namedParameters().values(), cap);
            if (main) err.println(stage + ": data parallel over " + dist.worldSize() + " ranks (" + dist.kind() + "), gradients through "
                    + (reducer != null ? "libtorch's DDP Reducer" : sync.buckets() + " bucket(s) all-reduced after backward")
                    + "; same options and weights on every rank");
        }
        if (step == 0 && curve != null) {
            Map<String, Object> c = curve.measure(policy, 0);
            if (main) curveLog.append(withStep(c, 0));
        }
        long stopAt = Math.min(total, o.longValue("max-steps") > 0 ? o.longValue("max-steps") : total);
        int evalEvery = o.integer("eval-every"), saveSteps = o.integer("save-steps");
        double maxNorm = o.num("max-norm");
        StepRanges nv = StepRanges.of(o.stage());
        ProfileWindow prof = ProfileWindow.of(o);
        if (prof != null && (prof.last() <= step || prof.first() > stopAt))
            err.println(stage + ": --profile-step" + (prof.first() == prof.last() ? "" : "s") + ": " + prof + " is outside the steps this run takes ("
                    + (step + 1) + ".." + stopAt + "); nothing will be profiled");
        boolean profiling = false;
        Progress bar = new Progress(stage, step, total, err, o.bool("quiet") || !main);
        long t0 = System.nanoTime();
        while (step < stopAt) {
            double lr = sched.lr(step);
            Map<String, Object> m = new LinkedHashMap<>();
            m.put("step", step + 1);
            if (prof != null && !profiling && prof.contains(step + 1)) {
                profiling = Nvtx.profilerStart();
                if (profiling) err.println(stage + ": profiling " + prof + " (cudaProfilerStart at step " + (step + 1) + ")"
                        + (Nvtx.toolLikelyAttached() ? "" : "; no Nsight tool seems attached (no CUDA_INJECTION64_PATH), so nothing is recorded"));
            }
            double comm0 = dist.commSeconds();
            try (PointerScope s = new PointerScope(); Nvtx.Range _ = nv.step.open()) {
                policy.zeroGrad();
                if (reducer != null) {
                    reducer.prepare(); // the step's one backward all-reduces its buckets as they are ready
                    try {
                        m.putAll(fn.step(step));
                    } catch (RuntimeException e) {
                        throw dist.collectiveFailure("backward with the Reducer's gradient all-reduce", e);
                    }
                    reducer.finish();
                } else m.putAll(fn.step(step));
                if (sync != null) sync.allReduce();
                double norm;
                try (Nvtx.Range _ = nv.clip.open()) {
                    norm = GradClip.clip(policy.namedParameters().values(), maxNorm);
                }
                m.put("grad_norm", norm);
                if (Double.isFinite(norm)) {
                    try (Nvtx.Range _ = nv.optimizerStep.open()) {
                        opt.step(lr);
                    }
                } else m.put("skipped", true);
            }
            if (profiling && step + 1 >= prof.last()) {
                Nvtx.profilerStop();
                profiling = false;
                err.println(stage + ": profiling stopped after step " + (step + 1) + " (cudaProfilerStop)");
            }
            m.put("lr", lr);
            m.putAll(Devices.peakMemory(policy.device())); // this step's peak: CUDA allocator (allocated, reserved) or peak RSS
            step++;
            if (dist.distributed()) m.put("comm_s", dist.commSeconds() - comm0);
            m.put("elapsed_s", (System.nanoTime() - t0) / 1e9);
            if (main) metrics.append(m);
            if (curve != null && evalEvery > 0 && (step % evalEvery == 0 || step == total)) {
                try (Nvtx.Range _ = nv.eval.open()) {
                    Map<String, Object> c = curve.measure(policy, step);
                    if (main) curveLog.append(withStep(c, step));
                }
            }
            if (saveSteps > 0 && step % saveSteps == 0 && step < total) {
                try (Nvtx.Range _ = nv.checkpoint.open()) {
                    checkpoint(ckpt, opt, step);
                }
            }
            Object loss = m.get("loss");
            bar.update(step, loss instanceof Double d ? String.format("loss %.4g", d) : "");
        }
        if (profiling) Nvtx.profilerStop(); // the window ran past the last step this run takes
        if (step < total) {
            checkpoint(ckpt, opt, step);
            if (main) err.println(stage + ": stopped at step " + step + "/" + total + " (--max-steps); resume by running the same command again");
            return step;
        }
        dist.barrier("the last step");
        if (main) {
            HfCheckpoint.save(policy, out);
            copyTokenizer(tokenizerDir, out);
            Files.deleteIfExists(ckpt);
        }
        dist.barrier("the saved model");
        return step;
    }

    /**
     * Whether {@code --dist-sync} asks for (reducer) or allows (auto) libtorch's Reducer: it serves a step whose rank runs
     * one backward through autograd alone, i.e. one micro-batch per rank ({@code batch / world <= micro-batch}) and no
     * {@code --fused-linear} (which adds the head's gradient after backward, when the Reducer's hooks have fired).
     */
    static boolean useReducer(Options o, int world) {
        String mode = o.require("dist-sync");
        boolean serves = o.integer("batch") / world <= o.integer("micro-batch") && !(o.keys().contains("fused-linear") && o.bool("fused-linear"));
        return switch (mode) {
            case "bucketed" -> false;
            case "auto" -> serves;
            case "reducer" -> {
                if (!serves) throw PipelineException.usage("--dist-sync reducer needs one micro-batch per rank (--micro-batch >= --batch / world size = "
                        + o.integer("batch") / world + ") and no --fused-linear; use --dist-sync bucketed or auto");
                yield true;
            }
            default -> throw PipelineException.usage("--dist-sync must be auto, reducer or bucketed, got '" + mode + "'");
        };
    }

    private void checkpoint(Path ckpt, AdamW opt, long step) throws IOException {
        dist.barrier("checkpoint at step " + step); // every rank finished the step: the checkpoint is of a step all took
        if (dist.isMain()) TrainCheckpoint.save(ckpt, policy.namedParameters(), opt, new TrainCheckpoint.State(step, step, 0, Map.of("stage", stage)));
    }

    private static Map<String, Object> withStep(Map<String, Object> m, long step) {
        Map<String, Object> r = new LinkedHashMap<>();
        r.put("step", step);
        r.putAll(m);
        return r;
    }

    /** Copies the tokenizer files of a model folder next to a saved model, so the folder is complete. */
    public static void copyTokenizer(Path from, Path to) throws IOException {
        if (from == null || from.toAbsolutePath().normalize().equals(to.toAbsolutePath().normalize())) return;
        for (String f : new String[] {"tokenizer.json", "tokenizer_config.json", "generation_config.json", "vocab.json", "merges.txt"}) {
            Path src = from.resolve(f);
            if (Files.isRegularFile(src)) Files.copy(src, to.resolve(f), java.nio.file.StandardCopyOption.REPLACE_EXISTING);
        }
    }
}
