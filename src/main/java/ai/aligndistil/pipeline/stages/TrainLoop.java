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
import ai.aligndistil.model.HfCheckpoint;
import ai.aligndistil.io.AtomicFiles;
import ai.aligndistil.train.AdamW;
import ai.aligndistil.train.Checkpoints;
import ai.aligndistil.train.GradClip;
import ai.aligndistil.train.LrSchedule;
import ai.aligndistil.train.StopRequest;
import ai.aligndistil.train.TrainCheckpoint;
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
        Checkpoints.Loaded resumed = null;
        if (o.bool("resume")) {
            try {
                resumed = Checkpoints.loadNewestReadable(out, policy.namedParameters(), opt, stage, err);
            } catch (Checkpoints.NoneReadableException e) {
                throw PipelineException.failure(stage + ": cannot resume: " + e.getMessage() + "; --no-resume starts over");
            }
        } else {
            Checkpoints.deleteAll(out); // starting over: older checkpoints must not shadow the new ones
        }
        Path lastCheckpoint = resumed == null ? null : resumed.file();
        if (resumed != null) {
            TrainCheckpoint.State st = resumed.state();
            step = st.step();
            if (!stage.equals(st.extra().get("stage")))
                throw new IOException(resumed.file() + ": a checkpoint of stage '" + st.extra().get("stage") + "', not " + stage);
            metrics.truncateAfter(step);
            curveLog.truncateAfter(step);
            err.println(stage + ": resuming from " + resumed.file() + " at step " + step + "/" + total);
        } else {
            Files.deleteIfExists(metrics.file());
            Files.deleteIfExists(curveLog.file());
            if (curve != null) {
                try (PointerScope _ = new PointerScope()) {
                    curveLog.append(withStep(curve.measure(policy, 0), 0));
                }
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
        Progress bar = new Progress(stage, step, total, err, o.bool("quiet"));
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
            try (PointerScope s = new PointerScope(); Nvtx.Range _ = nv.step.open()) {
                policy.zeroGrad();
                m.putAll(fn.step(step));
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
            step++;
            m.put("elapsed_s", (System.nanoTime() - t0) / 1e9);
            long rss = residentBytes();
            if (rss > 0) m.put("rss_mb", Math.round(rss / 1048576.0 * 10) / 10.0);
            metrics.append(m);
            if (curve != null && evalEvery > 0 && (step % evalEvery == 0 || step == total)) {
                try (PointerScope _ = new PointerScope(); Nvtx.Range _ = nv.eval.open()) { // tensors freed here, not at the next GC
                    curveLog.append(withStep(curve.measure(policy, step), step));
                }
            }
            if (saveSteps > 0 && step % saveSteps == 0 && step < total) {
                try (Nvtx.Range _ = nv.checkpoint.open()) {
                    lastCheckpoint = checkpoint(opt, step, keep, lastCheckpoint);
                }
            }
            Object loss = m.get("loss");
            bar.update(step, loss instanceof Double d ? String.format("loss %.4g", d) : "");
            // The step boundary: the one place a stop is decided (with data parallelism, issue 14, all ranks agree here).
            stopping = stop.agreedAtStepBoundary(step);
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
            err.println(stage + ": stopped at step " + step + "/" + total + " (--max-steps); checkpoint " + lastCheckpoint + "; " + resume);
            return step;
        }
        stop.saving(true);
        Path weights = out.resolve("model.safetensors");
        try {
            HfCheckpoint.save(policy, out);
            copyTokenizer(tokenizerDir, out);
        } catch (IOException e) {
            throw PipelineException.failure(stage + ": cannot write the model to " + weights + ": " + AtomicFiles.osError(e) + "; "
                    + (lastCheckpoint == null ? "no checkpoint of this run exists (--save-steps)" : "the checkpoint " + lastCheckpoint + " is intact; resume from it by running the same command again once the cause is fixed"));
        }
        Checkpoints.deleteAll(out);
        if (stop.requested())
            throw PipelineException.stopped(stage + ": stopped by SIG" + stop.signal() + " after the last step: the model is complete in " + out, StopRequest.exitCode(stop.signal()));
        return step;
    }

    /**
     * Writes the checkpoint of {@code step} and drops the oldest beyond {@code keep}; returns its file. A failed write
     * (no space, file-size limit, permission) leaves no partial file and the previous checkpoints as they were, and
     * stops the run with one line naming the path and the OS error.
     */
    private Path checkpoint(AdamW opt, long step, int keep, Path previous) throws IOException {
        Path file = Checkpoints.file(out, step);
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
