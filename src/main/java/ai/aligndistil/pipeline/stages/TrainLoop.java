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
import ai.aligndistil.io.AtomicFiles;
import ai.aligndistil.train.AdamW;
import ai.aligndistil.train.Checkpoints;
import ai.aligndistil.train.GradClip;
import ai.aligndistil.train.LrSchedule;
import ai.aligndistil.train.StopRequest;
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
 * a progress bar, an atomic checkpoint every {@code save-steps} steps ({@code checkpoint-<step>.safetensors}:
 * model, optimiser, step; the newest {@code keep-checkpoints} kept, {@link Checkpoints}) and resumption from the
 * newest readable one. The data order is a function of the seed and the step, so a resumed run repeats exactly
 * what an uninterrupted one does. At the end the model is saved into the output folder (config.json,
 * model.safetensors, tokenizer files) and the checkpoints removed.
 *
 * <p>Faults: SIGTERM/SIGINT ({@link StopRequest}) are checked at optimiser-step boundaries: the loop finishes the
 * step, checkpoints it and throws {@link PipelineException#stopped} (exit 143/130) with one line saying where and
 * how to resume. A checkpoint or model write that fails (no space, file-size limit, permission) removes its own
 * temporary file, leaves the previous checkpoint as it was and throws {@link PipelineException#failure} naming the
 * path and the OS error. Each metrics line carries {@code rss_mb} (resident memory, Linux) for soak runs.
 *
 * <p>Each phase runs inside an NVTX range ({@link StepRanges}: {@code <family>/step}, {@code /clip},
 * {@code /optimizer_step}, {@code /checkpoint}, {@code /eval}; the stages add the forward, loss and backward
 * ranges), and {@code --profile-step N} / {@code --profile-steps N:M} bracket those steps with
 * cudaProfilerStart/Stop ({@link ProfileWindow}).
 *
 * <p>Data parallel ({@link #parallel}): every rank runs this loop on its shard of each global batch; after the
 * step's backward passes the gradients are summed across ranks ({@link GradSync}, or libtorch's Reducer during the
 * backward, {@link ReducerSync}), so clipping and AdamW see the global gradient and every rank takes the same step.
 * At the start the ranks check that they were given the same options and hold the same weights; metrics, curves,
 * checkpoints and the final model are written by rank 0 only, after a barrier. A stop request reaching any rank
 * stops every rank after the same step ({@link DistGroup#any} at the step boundary), and rank 0 saves it.
 * {@code comm_s} in the metrics is the step's time in collectives.
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

    /**
     * Runs to the end (or to {@code max-steps}); returns the number of optimiser steps completed. SIGTERM and SIGINT
     * are handled while it runs (see the class comment); they keep their default behaviour before and after.
     */
    public long run(StepFn fn) throws IOException {
        try (StopRequest stop = StopRequest.install(stage, err)) {
            return run(fn, stop);
        }
    }

    /** Runs with a given stop request (tests and callers that manage signals themselves). */
    public long run(StepFn fn, StopRequest stop) throws IOException {
        try {
            return loop(fn, stop);
        } catch (java.nio.file.FileSystemException e) {
            throw PipelineException.failure(stage + ": " + e.getFile() + ": " + AtomicFiles.osError(e));
        } catch (java.io.UncheckedIOException e) {
            // metrics.jsonl / curve.jsonl appends (a full disk, a file-size limit): the path and the OS error
            if (e.getCause() instanceof java.nio.file.FileSystemException f) throw PipelineException.failure(stage + ": " + f.getFile() + ": " + AtomicFiles.osError(f));
            throw PipelineException.failure(stage + ": cannot append to " + out.resolve("metrics.jsonl") + " or " + out.resolve("curve.jsonl") + ": " + AtomicFiles.osError(e.getCause()));
        }
    }

    private long loop(StepFn fn, StopRequest stop) throws IOException {
        int keep = o.integer("keep-checkpoints");
        if (keep < 1) throw PipelineException.usage(stage + ": --keep-checkpoints must be at least 1 (got " + keep + ")");
        Files.createDirectories(out);
        AdamW opt = new AdamW(policy.namedParameters(), AdamW.Options.spec().withWeightDecay(o.num("weight-decay")));
        LrSchedule sched = new LrSchedule(o.num("lr"), total, (long) Math.ceil(o.num("warmup-ratio") * total), o.num("min-lr-ratio") * o.num("lr"));
        JsonLines metrics = new JsonLines(out.resolve("metrics.jsonl"));
        JsonLines curveLog = new JsonLines(out.resolve("curve.jsonl"));
        long step = 0;
        boolean main = dist.isMain();
        Checkpoints.Loaded resumed = null;
        if (o.bool("resume")) {
            try {
                resumed = Checkpoints.loadNewestReadable(out, policy.namedParameters(), opt, stage, err);
            } catch (Checkpoints.NoneReadableException e) {
                throw PipelineException.failure(stage + ": cannot resume: " + e.getMessage() + "; --no-resume starts over");
            }
        } else if (main) {
            Checkpoints.deleteAll(out); // starting over: older checkpoints must not shadow the new ones
        }
        Path lastCheckpoint = resumed == null ? null : resumed.file();
        if (resumed != null) {
            TrainCheckpoint.State st = resumed.state();
            step = st.step();
            if (!stage.equals(st.extra().get("stage")))
                throw new IOException(resumed.file() + ": a checkpoint of stage '" + st.extra().get("stage") + "', not " + stage);
            if (main) {
                metrics.truncateAfter(step);
                curveLog.truncateAfter(step);
                err.println(stage + ": resuming from " + resumed.file() + " at step " + step + "/" + total);
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
        if (resumed == null && curve != null) {
            try (PointerScope _ = new PointerScope()) {
                Map<String, Object> c = curve.measure(policy, 0);
                if (main) curveLog.append(withStep(c, 0));
            }
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
        boolean stopping = false;
        while (step < stopAt && !stopping) {
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
                m.putAll(Devices.peakMemory(policy.device())); // this step's peak: CUDA allocator (allocated, reserved) or peak RSS
            }
            if (profiling && step + 1 >= prof.last()) {
                Nvtx.profilerStop();
                profiling = false;
                err.println(stage + ": profiling stopped after step " + (step + 1) + " (cudaProfilerStop)");
            }
            m.put("lr", lr);
            step++;
            if (dist.distributed()) m.put("comm_s", dist.commSeconds() - comm0);
            m.put("elapsed_s", (System.nanoTime() - t0) / 1e9);
            long rss = residentBytes();
            if (rss > 0) m.put("rss_mb", Math.round(rss / 1048576.0 * 10) / 10.0);
            if (main) metrics.append(m);
            if (curve != null && evalEvery > 0 && (step % evalEvery == 0 || step == total)) {
                try (PointerScope _ = new PointerScope(); Nvtx.Range _ = nv.eval.open()) { // tensors freed here, not at the next GC
                    Map<String, Object> c = curve.measure(policy, step);
                    if (main) curveLog.append(withStep(c, step));
                }
            }
            if (saveSteps > 0 && step % saveSteps == 0 && step < total) {
                try (Nvtx.Range _ = nv.checkpoint.open()) {
                    lastCheckpoint = checkpoint(opt, step, keep, lastCheckpoint);
                }
            }
            Object loss = m.get("loss");
            bar.update(step, loss instanceof Double d ? String.format("loss %.4g", d) : "");
            // The step boundary: the one place a stop is decided; with data parallelism all ranks agree here, so a
            // signal reaching any rank stops every rank after this same step.
            stopping = dist.any(stop.agreedAtStepBoundary(step), "the stop request after step " + step);
            if (stopping && !stop.requested()) stop.request("TERM"); // another rank was signalled
        }
        if (profiling) Nvtx.profilerStop(); // the window ran past the last step this run takes
        if (step < total) {
            if (lastCheckpoint == null || Checkpoints.stepOf(lastCheckpoint) != step) {
                stop.saving(true);
                lastCheckpoint = checkpoint(opt, step, keep, lastCheckpoint);
            }
            String resume = "resume by running the same command again";
            if (stopping)
                throw PipelineException.stopped(stage + ": stopped by SIG" + stop.signal() + " after step " + step + "/" + total + "; checkpoint "
                        + lastCheckpoint + "; " + resume, StopRequest.exitCode(stop.signal()));
            if (main) err.println(stage + ": stopped at step " + step + "/" + total + " (--max-steps); checkpoint " + lastCheckpoint + "; " + resume);
            return step;
        }
        stop.saving(true);
        Path weights = out.resolve("model.safetensors");
        dist.barrier("the last step");
        if (main) try {
            HfCheckpoint.save(policy, out);
            copyTokenizer(tokenizerDir, out);
        } catch (IOException e) {
            throw PipelineException.failure(stage + ": cannot write the model to " + weights + ": " + AtomicFiles.osError(e) + "; "
                    + (lastCheckpoint == null ? "no checkpoint of this run exists (--save-steps)" : "the checkpoint " + lastCheckpoint + " is intact; resume from it by running the same command again once the cause is fixed"));
        }
        if (main) Checkpoints.deleteAll(out);
        dist.barrier("the saved model");
        if (stop.requested())
            throw PipelineException.stopped(stage + ": stopped by SIG" + stop.signal() + " after the last step: the model is complete in " + out, StopRequest.exitCode(stop.signal()));
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

    /**
     * Writes the checkpoint of {@code step} and drops the oldest beyond {@code keep}; returns its file. A failed write
     * (no space, file-size limit, permission) leaves no partial file and the previous checkpoints as they were, and
     * stops the run with one line naming the path and the OS error.
     */
    private Path checkpoint(AdamW opt, long step, int keep, Path previous) throws IOException {
        Path file = Checkpoints.file(out, step);
        dist.barrier("checkpoint at step " + step); // every rank finished the step: the checkpoint is of a step all took
        if (!dist.isMain()) return file;
        try {
            TrainCheckpoint.save(file, policy.namedParameters(), opt, new TrainCheckpoint.State(step, step, 0, Map.of("stage", stage)));
        } catch (IOException e) {
            throw PipelineException.failure(stage + ": cannot write checkpoint " + file + ": " + AtomicFiles.osError(e) + "; "
                    + (previous == null ? "no earlier checkpoint of this run exists" : "the previous checkpoint " + previous + " is intact; resume from it by running the same command again once the cause is fixed"));
        }
        Checkpoints.prune(out, keep);
        return file;
    }

    /** Resident memory of this process in bytes (Linux: VmRSS of /proc/self/status), or -1 where unknown. */
    static long residentBytes() {
        try {
            for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
                if (line.startsWith("VmRSS:")) {
                    String[] f = line.substring(6).trim().split("\\s+");
                    return Long.parseLong(f[0]) * 1024; // kB
                }
            }
        } catch (IOException | RuntimeException e) {
            // not Linux: no resident-memory column
        }
        return -1;
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
