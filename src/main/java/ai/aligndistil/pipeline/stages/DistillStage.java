package ai.aligndistil.pipeline.stages;

import java.io.IOException;
import java.io.PrintStream;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import org.bytedeco.pytorch.BoolOptional;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorArrayRefOptional;
import org.bytedeco.pytorch.global.torch.ScalarType;

import ai.aligndistil.io.DType;
import ai.aligndistil.kernel.FusedDistillLoss;
import ai.aligndistil.kernel.LossConfig;
import ai.aligndistil.kernel.Nvtx;
import ai.aligndistil.kernel.Variant;
import ai.aligndistil.model.CausalLM;
import ai.aligndistil.model.ChatTemplate;
import ai.aligndistil.model.ChunkedFusedLinearLoss;
import ai.aligndistil.model.Devices;
import ai.aligndistil.model.HfCheckpoint;
import ai.aligndistil.model.Tensors;
import ai.aligndistil.pipeline.task.BuiltinTask;
import ai.aligndistil.pipeline.config.Options;
import ai.aligndistil.pipeline.data.DataFiles;
import ai.aligndistil.pipeline.data.JsonLines;
import ai.aligndistil.pipeline.data.Seqs;
import ai.aligndistil.pipeline.profiling.StepRanges;
import ai.aligndistil.train.dist.DistGroup;
import ai.aligndistil.train.dist.RankStreams;

/**
 * {@code distill}: off-policy and on-policy AlignDistil (and its variants) through the project's fused kernel.
 *
 * <p>Per micro-batch: the student's logits [B, T, V] come from a forward pass with autograd; the DPO model's
 * and the second teacher's (reverse DPO for {@code aligndistil}/{@code contrast}, the reference for
 * {@code adaptive}/{@code theorem1}, none for {@code gkd}) come from forward passes under inference mode. The
 * kernel reads the three logit tensors in place (their {@code data_ptr}), writes d loss / d logits into a
 * gradient tensor, and {@code logits.backward(grad)} carries it into the parameters; no [tokens x V] softmax is
 * built. The loss is divided by the sequences of the whole optimiser batch ({@code sequenceDivisor}), so
 * micro-batching does not change the gradient (spec 3.3).
 *
 * <p>Off-policy distils on the data's chosen responses (spec 6.2). On-policy samples one response per prompt
 * from the current policy (temperature 1, top-p 1), distils on it, and takes one optimiser step per rollout
 * batch of {@code --batch} prompts (spec 6.3).
 */
public final class DistillStage {
    private DistillStage() {}

    /** NVTX ranges distill/* (push/pop pairs: an exception leaves one open, which only shows in the profile of a failed step). */

    public static Options.Spec spec() {
        return Stage.common("distill")
                .value("mode", "off-policy", "off-policy (distil on the data's chosen responses) or on-policy (on responses sampled from the student)")
                .value("variant", "aligndistil", "loss: aligndistil | contrast (constant weight) | adaptive | theorem1 | gkd (plain reverse KL to the DPO model)")
                .value("dpo", null, "the DPO model folder (the first teacher); required")
                .value("reverse-dpo", null, "the reverse-DPO model folder (second teacher of aligndistil and contrast)")
                .value("ref", null, "the reference model folder (second teacher of adaptive and theorem1; default: --model)")
                .value("beta", 0.1, "DPO beta of the teachers' implicit reward (official: 0.1)")
                .value("beta2", null, "weight of the logit extrapolation; unset: 10 off-policy, 15 on-policy (official scripts)")
                .value("epsilon", 1e-3, "floor of the adaptive token weight (official: 1e-3)")
                .value("temperature", 1.0, "teacher temperature (gkd ignores it)")
                .value("student-temperature", 1.0, "student temperature (the official on-policy trainer at T != 1: set both to T)")
                .flag("length-norm", true, "divide each sequence's loss by its selected rows (--no-length-norm: sum over rows)")
                .value("positions", "paper", "logit rows distilled: paper (P-1..S-2), official, official-off-policy, official-on-policy (docs/pipeline.md)")
                .value("gen-batch", 64, "prompts per sampling batch on-policy (memory, not results)")
                .flag("fused-linear", false, "apply the three LM heads chunk by chunk with the fused loss (ChunkedFusedLinearLoss): no [tokens, V] logits")
                .value("fused-linear-chunk", 0, "token rows per chunk with --fused-linear; 0: -Daligndistil.fusedLinear.chunk, else 256 on CPU, 1024 on CUDA");
    }

    /** Per-micro-batch sums the step reports as metrics (spec 5). */
    public static final class Sums {
        public double loss, weight, reward, klTea, klSecond, tokenKlTea, tokenKlSecond;
        /** Sum over sequences of beta * KL(p_dpo || p_second) summed over rows (the DPO model's expected token reward). */
        public double teacherReward;
        /** Sum over sequences of the token reward of the actual next tokens (summed, and per-token mean). */
        public double seqReward, tokenReward;
        public long sequences, rows;
        /** Whether to compute the teacher-side metrics (two extra passes over V per selected row, in Java). */
        public boolean teacherMetrics;
    }

    /**
     * One micro-batch: forward, fused loss and gradient, backward. Returns the loss contribution (already
     * divided by {@code divisor} sequences).
     */
    public static double microStep(FusedDistillLoss fused, CausalLM student, CausalLM dpo, CausalLM second, Seqs.Packed p,
                                   Seqs.Positions pos, double divisor, Sums sums) {
        long b = p.rows(), t = p.width();
        try (Arena arena = Arena.ofConfined()) {
            StepRanges.DISTILL.forwardStudent.push();
            Tensor logits = student.forward(p.ids());
            Nvtx.pop();
            StepRanges.DISTILL.forwardTeachers.push();
            Tensor dLogits = dpo.forwardInference(p.ids(), null).contiguous();
            Tensor sLogits = second == null ? null : second.forwardInference(p.ids(), null).contiguous();
            Nvtx.pop();
            long v = logits.size(2);
            DType dt = Tensors.is(logits, ScalarType.BFloat16) ? DType.BF16 : DType.F32;
            Devices.Choice dev = student.device();
            // The gradient is allocated where the logits are: the kernel writes it there, backward reads it there.
            Tensor grad = Tensors.zeros(dt == DType.BF16 ? ScalarType.BFloat16 : ScalarType.Float, dev, b, t, v);
            MemorySegment mask = arena.allocate(b * t);
            int[] n = Seqs.distillMask(p, pos, mask);
            MemorySegment w = arena.allocate(ValueLayout.JAVA_FLOAT, b * t);
            MemorySegment met = arena.allocate(ValueLayout.JAVA_FLOAT, b * t * 3);
            double loss;
            StepRanges.DISTILL.loss.push();
            try (FusedDistillLoss.Batch batch = fused.newBatch(b, t, v)) {
                if (dev.cuda()) {
                    // CUDA: the kernel reads the three logit tensors and writes the gradient in device memory, on
                    // libtorch's current stream (ordered after the forwards, before the backward, with no device-wide
                    // synchronisation); only the [B, T] mask goes up and the [B, T] weights and metrics come down.
                    Tensor maskDev = Tensors.onDevice(Tensors.fromBytes(mask, b, t), dev);
                    Tensor wDev = Tensors.zeros(ScalarType.Float, dev, b * t), metDev = Tensors.zeros(ScalarType.Float, dev, b * t * 3);
                    batch.student(Tensors.deviceSegment(logits), dt).dpo(Tensors.deviceSegment(dLogits), dtype(dLogits));
                    if (sLogits != null) batch.second(Tensors.deviceSegment(sLogits), dtype(sLogits));
                    batch.mask(Tensors.deviceSegment(maskDev)).grad(Tensors.deviceSegment(grad), dt)
                            .weights(Tensors.deviceSegment(wDev)).metrics(Tensors.deviceSegment(metDev)).sequenceDivisor(divisor);
                    long stream = Devices.currentStream(dev);
                    batch.runOnDevice(stream);
                    loss = batch.synchronize(stream); // waits for this stream only: reading the loss
                    MemorySegment.copy(Tensors.segment(Tensors.host(wDev)), 0, w, 0, b * t * 4);
                    MemorySegment.copy(Tensors.segment(Tensors.host(metDev)), 0, met, 0, b * t * 12);
                } else {
                    batch.student(Tensors.segment(logits), dt).dpo(Tensors.segment(dLogits), dtype(dLogits));
                    if (sLogits != null) batch.second(Tensors.segment(sLogits), dtype(sLogits));
                    batch.mask(mask).grad(Tensors.segment(grad), dt).weights(w).metrics(met).sequenceDivisor(divisor);
                    loss = batch.run();
                }
            }
            Nvtx.pop();
            StepRanges.DISTILL.backward.push();
            logits.backward(grad, new BoolOptional(), false, new TensorArrayRefOptional());
            student.finishBackward();
            Nvtx.pop();
            if (sums != null) {
                sums.loss += loss;
                addRowSums(sums, b, t, n, mask, w, met);
                StepRanges.DISTILL.metrics.push();
                if (sums.teacherMetrics && sLogits != null) {
                    if (dev.cuda()) teacherMetricsTensors(fused.config().beta(), p, mask, dLogits, sLogits, n, sums);
                    else teacherMetrics(fused.config().beta(), p, mask, Tensors.segment(dLogits), dtype(dLogits),
                            Tensors.segment(sLogits), dtype(sLogits), v, n, sums);
                }
                Nvtx.pop();
            }
            return loss;
        }
    }

    /** Rows of logits the tensor form of the teacher metrics handles at once (bounds its f32 [rows, V] temporaries). */
    static final long METRIC_ROWS = 256;

    /**
     * {@link #teacherMetrics} with libtorch operations where the logits are (a GPU: no host copy of logits; only
     * [B*T] per-row results come to the host). Same sums; on the CPU it agrees with the Java form to f32 rounding
     * (DistillDeviceTest).
     */
    static void teacherMetricsTensors(double beta, Seqs.Packed p, MemorySegment mask, Tensor zd, Tensor zr, int[] n, Sums sums) {
        int b = p.rows();
        long rows = b * (long) p.width(), v = zd.size(-1);
        double[] seqTea = new double[b], seqTok = new double[b];
        int[] tokRows = new int[b];
        long[] ids = Tensors.toLongs(p.ids());
        Tensor fd = zd.reshape(rows, v), fr = zr.reshape(rows, v);
        for (long r0 = 0; r0 < rows; r0 += METRIC_ROWS) {
            long c = Math.min(METRIC_ROWS, rows - r0);
            teacherRowMetricsTensors(beta, p, ids, mask, fd.narrow(0, r0, c), fr.narrow(0, r0, c), r0, seqTea, seqTok, tokRows);
        }
        addTeacherSums(n, seqTea, seqTok, tokRows, sums);
    }

    /**
     * {@link #teacherRowMetrics} for the rows {@code [firstRow, firstRow + zd.size(0))} whose teacher logits are the
     * [rows, V] tensors {@code zd}, {@code zr} (any device): log-softmax, KL and the next token's log-ratio computed
     * where the logits are; only one f32 per row comes to the host.
     */
    static void teacherRowMetricsTensors(double beta, Seqs.Packed p, long[] ids, MemorySegment mask, Tensor zd, Tensor zr, long firstRow,
                                         double[] seqTeaOut, double[] seqTokOut, int[] tokRowsOut) {
        long t = p.width(), c = zd.size(0);
        long[] next = new long[(int) c];
        for (int j = 0; j < c; j++) {
            long row = firstRow + j;
            next[j] = (row % t) + 1 < t ? ids[(int) row + 1] : 0; // the last position has no next token: ignored below
        }
        float[] k, tk;
        try (org.bytedeco.pytorch.InferenceMode im = new org.bytedeco.pytorch.InferenceMode()) {
            Tensor ld = zd.to(ScalarType.Float).log_softmax(-1), lr = zr.to(ScalarType.Float).log_softmax(-1);
            Tensor diff = ld.sub(lr);
            Tensor kl = ld.exp().mul(diff).sum(new long[] {-1}, false, new org.bytedeco.pytorch.ScalarTypeOptional());
            Tensor tok = diff.gather(1, onDeviceOf(Tensors.fromLongs(next, c, 1), zd)).squeeze(1);
            k = Tensors.toFloats(kl);
            tk = Tensors.toFloats(tok);
        }
        for (int j = 0; j < c; j++) {
            long row = firstRow + j;
            if (mask.get(ValueLayout.JAVA_BYTE, row) == 0) continue;
            int i = (int) (row / t);
            seqTeaOut[i] += beta * k[j];
            if (row % t + 1 < p.len()[i]) {
                seqTokOut[i] += beta * tk[j];
                tokRowsOut[i]++;
            }
        }
    }

    private static Tensor onDeviceOf(Tensor host, Tensor like) {
        return like.is_cuda() ? host.to(like.device(), host.scalar_type()) : host;
    }

    /**
     * {@link #microStep} through the fused-linear loss ({@code --fused-linear}): the student's forward stops at
     * the final hidden states, {@link ChunkedFusedLinearLoss} applies the three LM heads chunk by chunk (never a
     * [tokens x V] tensor), {@code hidden.backward(dX)} carries the gradient into the body, and dW is added into
     * the head's gradient (the embedding's when the head is tied). Same loss, gradients and metrics.
     */
    public static double microStepFusedLinear(ChunkedFusedLinearLoss fl, CausalLM student, CausalLM dpo, CausalLM second, Seqs.Packed p,
                                              Seqs.Positions pos, double divisor, Sums sums) {
        long b = p.rows(), t = p.width();
        try (Arena arena = Arena.ofConfined()) {
            StepRanges.DISTILL.forwardStudent.push();
            Tensor hidden = student.forwardHidden(p.ids(), null);
            Nvtx.pop();
            StepRanges.DISTILL.forwardTeachers.push();
            ChunkedFusedLinearLoss.Teacher d = ChunkedFusedLinearLoss.Teacher.hidden(dpo.forwardHiddenInference(p.ids(), null), dpo.headWeight());
            ChunkedFusedLinearLoss.Teacher s2 = second == null ? null
                    : ChunkedFusedLinearLoss.Teacher.hidden(second.forwardHiddenInference(p.ids(), null), second.headWeight());
            Nvtx.pop();
            MemorySegment mask = arena.allocate(b * t);
            int[] n = Seqs.distillMask(p, pos, mask);
            MemorySegment w = arena.allocate(ValueLayout.JAVA_FLOAT, b * t);
            MemorySegment met = arena.allocate(ValueLayout.JAVA_FLOAT, b * t * 3);
            boolean teacherMetrics = sums != null && sums.teacherMetrics && second != null;
            double[] seqTea = new double[(int) b], seqTok = new double[(int) b];
            int[] tokRows = new int[(int) b];
            long[] ids = teacherMetrics ? Tensors.toLongs(p.ids()) : null;
            double beta = fl.config().beta();
            fl.sequenceDivisor(divisor).weights(w).metrics(met).listener(!teacherMetrics ? null : (r0, rows, zd, zr) -> {
                if (zd.is_cuda()) teacherRowMetricsTensors(beta, p, ids, mask, zd, zr, r0, seqTea, seqTok, tokRows); // no host copy of logits
                else teacherRowMetrics(beta, p, ids, mask, Tensors.segment(zd), dtype(zd), Tensors.segment(zr), dtype(zr), zd.size(1), r0, rows,
                        seqTea, seqTok, tokRows);
            });
            StepRanges.DISTILL.loss.push();
            ChunkedFusedLinearLoss.Result r = fl.run(hidden, student.headWeight(), d, s2, mask);
            Nvtx.pop();
            StepRanges.DISTILL.backward.push();
            hidden.backward(r.dHidden(), new BoolOptional(), false, new TensorArrayRefOptional());
            student.finishBackward();
            try (NoGradGuard g = new NoGradGuard()) {
                Tensor head = student.headWeight();
                Tensor dW = r.dHead().to(head.scalar_type());
                Tensor grad = head.grad();
                if (grad.defined()) grad.add_(dW);
                else head.mutable_grad().put(dW);
            }
            Nvtx.pop();
            if (sums != null) {
                sums.loss += r.loss();
                addRowSums(sums, b, t, n, mask, w, met);
                if (teacherMetrics) addTeacherSums(n, seqTea, seqTok, tokRows, sums);
            }
            return r.loss();
        }
    }

    /** Adds one micro-batch's per-row weights and metrics (f32 [B*T], [B*T*3]) to the step's per-sequence sums. */
    static void addRowSums(Sums sums, long b, long t, int[] n, MemorySegment mask, MemorySegment w, MemorySegment met) {
        for (int i = 0; i < b; i++) {
            if (n[i] == 0) continue;
            double ws = 0, r = 0, kt = 0, ks = 0;
            for (long row = i * t; row < (i + 1) * t; row++) {
                if (mask.get(ValueLayout.JAVA_BYTE, row) == 0) continue;
                ws += w.getAtIndex(ValueLayout.JAVA_FLOAT, row);
                r += met.getAtIndex(ValueLayout.JAVA_FLOAT, row * 3);
                kt += met.getAtIndex(ValueLayout.JAVA_FLOAT, row * 3 + 1);
                ks += met.getAtIndex(ValueLayout.JAVA_FLOAT, row * 3 + 2);
            }
            sums.weight += ws / n[i];
            sums.reward += r;
            sums.klTea += kt;
            sums.klSecond += ks;
            sums.tokenKlTea += kt / n[i];
            sums.tokenKlSecond += ks / n[i];
            sums.sequences++;
            sums.rows += n[i];
        }
    }

    /**
     * Metrics of spec section 5 that only involve the teachers: {@code dpo_model_expected_reward} (per row
     * beta * sum_v p_dpo (log p_dpo - log p_2)) and {@code seq_reward} / {@code token_reward} (the token reward
     * beta * (log p_dpo - log p_2) of the token that follows each selected row). Reads the logits in place.
     */
    static void teacherMetrics(double beta, Seqs.Packed p, MemorySegment mask, MemorySegment zd, DType dd, MemorySegment zr, DType dr,
                               long v, int[] n, Sums sums) {
        int b = p.rows();
        double[] seqTea = new double[b], seqTok = new double[b];
        int[] tokRows = new int[b];
        teacherRowMetrics(beta, p, Tensors.toLongs(p.ids()), mask, zd, dd, zr, dr, v, 0, (long) b * p.width(), seqTea, seqTok, tokRows);
        addTeacherSums(n, seqTea, seqTok, tokRows, sums);
    }

    /** Adds per-sequence teacher metrics (from {@link #teacherRowMetrics}) to the step's sums. */
    static void addTeacherSums(int[] n, double[] seqTea, double[] seqTok, int[] tokRows, Sums sums) {
        for (int i = 0; i < n.length; i++) {
            if (n[i] == 0) continue;
            sums.teacherReward += seqTea[i];
            sums.seqReward += seqTok[i];
            sums.tokenReward += tokRows[i] == 0 ? 0 : seqTok[i] / tokRows[i];
        }
    }

    /**
     * The per-row part of {@link #teacherMetrics} for the selected rows in {@code [firstRow, firstRow + rows)}, whose
     * logits start at {@code zd}/{@code zr} (row {@code firstRow} first), accumulated per sequence.
     */
    static void teacherRowMetrics(double beta, Seqs.Packed p, long[] ids, MemorySegment mask, MemorySegment zd, DType dd, MemorySegment zr,
                                  DType dr, long v, long firstRow, long rows, double[] seqTeaOut, double[] seqTokOut, int[] tokRowsOut) {
        long t = p.width();
        for (int i = (int) (firstRow / t); i < p.rows() && (long) i * t < firstRow + rows; i++) {
            double seqTea = 0, seqTok = 0;
            int tokRows = 0;
            for (long r = Math.max(0, firstRow - i * t); r < t && i * t + r < firstRow + rows; r++) {
                long row = i * t + r;
                if (mask.get(ValueLayout.JAVA_BYTE, row) == 0) continue;
                long off = (row - firstRow) * v;
                double md = Double.NEGATIVE_INFINITY, mr = Double.NEGATIVE_INFINITY;
                for (long c = 0; c < v; c++) {
                    md = Math.max(md, read(zd, dd, off + c));
                    mr = Math.max(mr, read(zr, dr, off + c));
                }
                double sd = 0, sr = 0;
                for (long c = 0; c < v; c++) {
                    sd += Math.exp(read(zd, dd, off + c) - md);
                    sr += Math.exp(read(zr, dr, off + c) - mr);
                }
                double ad = md + Math.log(sd), ar = mr + Math.log(sr), kl = 0;
                for (long c = 0; c < v; c++) {
                    double ld = read(zd, dd, off + c) - ad, lr = read(zr, dr, off + c) - ar;
                    kl += Math.exp(ld) * (ld - lr);
                }
                seqTea += beta * kl;
                if (r + 1 < p.len()[i]) {
                    long tok = ids[(int) (i * t + r + 1)];
                    seqTok += beta * ((read(zd, dd, off + tok) - ad) - (read(zr, dr, off + tok) - ar));
                    tokRows++;
                }
            }
            seqTeaOut[i] += seqTea;
            seqTokOut[i] += seqTok;
            tokRowsOut[i] += tokRows;
        }
    }

    private static double read(MemorySegment s, DType d, long index) {
        if (d == DType.BF16) return Float.intBitsToFloat(s.getAtIndex(ValueLayout.JAVA_SHORT, index) << 16);
        return s.getAtIndex(ValueLayout.JAVA_FLOAT, index);
    }

    private static DType dtype(Tensor t) { return Tensors.is(t, ScalarType.BFloat16) ? DType.BF16 : DType.F32; }

    /** The loss configuration of the options (beta2 default: 10 off-policy, 15 on-policy, as the scripts). */
    public static LossConfig lossConfig(Options o) {
        Variant v = Variant.parse(o.require("variant"));
        boolean on = onPolicy(o);
        double beta2 = o.has("beta2") ? o.num("beta2") : (on ? 15.0 : 10.0);
        return new LossConfig(v, o.num("beta"), beta2, o.num("epsilon"), o.num("temperature"), o.num("student-temperature"), o.bool("length-norm"));
    }

    static boolean onPolicy(Options o) {
        return switch (o.require("mode")) {
            case "on-policy", "on" -> true;
            case "off-policy", "off" -> false;
            default -> throw new IllegalArgumentException("--mode must be off-policy or on-policy, got '" + o.str("mode") + "'");
        };
    }

    public static Path run(Options o, PrintStream err) throws IOException {
        return run(o, err, DistGroup.single());
    }

    /**
     * Runs as one rank of {@code dist}: this rank's shard of every global batch (on-policy: its shard of the prompts,
     * sampled from its own random stream), the loss divided by the global batch so that summed gradients are the
     * global gradient, and the metrics' sums added across ranks.
     */
    public static Path run(Options o, PrintStream err, DistGroup dist) throws IOException {
        Path modelDir = o.path("model"), out = o.path("out");
        boolean on = onPolicy(o);
        LossConfig cfg = lossConfig(o);
        String name = (on ? "on-" : "off-") + cfg.variant().id();
        Seqs.Positions pos = Seqs.Positions.parse(o.require("positions"), on);
        // the fused-linear chunk as ChunkedFusedLinearLoss picks it: the option, else its CUDA / CPU default
        long chunk = !o.bool("fused-linear") ? 0 : o.integer("fused-linear-chunk") > 0 ? o.integer("fused-linear-chunk")
                : Stage.device(o).cuda() ? ChunkedFusedLinearLoss.DEFAULT_CHUNK_CUDA : ChunkedFusedLinearLoss.DEFAULT_CHUNK_CPU;
        Devices.Choice dev = Stage.preflight(o, modelDir, o.integer("micro-batch"), cfg.variant() == Variant.GKD ? 1 : 2,
                ai.aligndistil.model.MemoryPlan.Kind.DISTILL, chunk, err);
        if (dev.cuda() && !ai.aligndistil.kernel.NativeCuda.available()) // the fused loss on CUDA is our kernel library's
            throw ai.aligndistil.pipeline.config.PipelineException.refused(o.stage() + ": --device " + o.str("device") + ": the fused loss's CUDA library is unavailable: "
                    + ai.aligndistil.kernel.NativeCuda.problem() + " (build with nvcc 13 on the PATH)");
        Stage.Text text = Stage.Text.of(modelDir, o);
        BuiltinTask task = o.has("task") ? BuiltinTask.load(o.path("task")) : null;

        CausalLM policy = Stage.load(modelDir, o);
        CausalLM dpo = Stage.loadFrozen(o.path("dpo"), o);
        CausalLM second = switch (cfg.variant()) {
            case ALIGNDISTIL, CONTRAST -> Stage.loadFrozen(o.path("reverse-dpo"), o);
            case ADAPTIVE, THEOREM1 -> Stage.loadFrozen(o.has("ref") ? o.path("ref") : modelDir, o);
            case GKD -> null;
        };
        FusedDistillLoss fused = FusedDistillLoss.create(cfg);
        ChunkedFusedLinearLoss fusedLinear = o.bool("fused-linear") ? new ChunkedFusedLinearLoss(cfg, o.integer("fused-linear-chunk")) : null;
        int batch = o.integer("batch"), micro = o.integer("micro-batch"), epochs = o.integer("epochs");
        long seed = o.longValue("seed");
        Stage.requireDivisible(batch, dist.worldSize());

        // Off-policy: the chosen responses of the preference data. On-policy: the prompts (of a prompt file or of the pairs).
        List<ChatTemplate.Example> examples = new ArrayList<>();
        PromptSet prompts = null;
        if (on) {
            DataFiles.Loaded<List<ChatTemplate.Message>> l = DataFiles.prompts(o.path("data"), o.bool("skip-bad-lines"));
            Stage.report(err, name, o.str("data"), l, null);
            prompts = PromptSet.of(l.records(), text, o.integer("prompt-max-len"), task);
        } else {
            DataFiles.Loaded<DataFiles.Pair> l = DataFiles.pairs(o.path("data"), o.bool("skip-bad-lines"));
            DataFiles.Counts c = new DataFiles.Counts();
            for (DataFiles.Pair p : l.records()) {
                ChatTemplate.Example e = DataFiles.tokenize(text.tpl(), text.tok(), p.chosenConversation(), o.integer("max-len"), c);
                if (e != null) examples.add(e);
            }
            Stage.report(err, name, o.str("data"), l, c);
        }
        int n = on ? prompts.size() : examples.size();
        int[] order = Stage.order(n, epochs, seed);
        TrainLoop loop = new TrainLoop(name, out, policy, modelDir, o, Stage.steps(n, epochs, batch), err).parallel(dist);
        if (o.integer("eval-every") > 0 && o.has("eval-prompts")) {
            PromptSet ps = PromptSet.load(o.path("eval-prompts"), text, o.integer("prompt-max-len"), task, true, err).first(o.integer("curve-prompts"));
            CausalLM init = Stage.loadFrozen(modelDir, o);
            loop.curve(PromptSet.curve(ps, task, init, dpo, o.integer("generate-max-len"), o.integer("min-new-tokens"), text.eos(), text.pad(), seed, dist));
        }
        final PromptSet fp = prompts;
        final double[] initReward = {Double.NaN};
        final List<ChatTemplate.Example> rollouts = new ArrayList<>();
        loop.run(step -> {
            Sums s = new Sums();
            s.teacherMetrics = second != null;
            List<int[]> micros = Stage.shard(order, step, batch, micro, dist.rank(), dist.worldSize());
            List<ChatTemplate.Example> rollout = null;
            double reward = 0;
            if (on) {
                List<long[]> ps = new ArrayList<>();
                int[] idx = new int[batch / dist.worldSize()];
                int k = 0;
                for (int[] mb : micros) for (int i : mb) {
                    ps.add(fp.ids().get(i));
                    idx[k++] = i;
                }
                StepRanges.DISTILL.rollout.push();
                rollout = Sampler.sample(policy, ps, o.integer("generate-max-len"), o.integer("min-new-tokens"), 1.0, 1.0, RankStreams.seed(seed, dist.rank(), step), text.eos(), text.pad(), o.integer("gen-batch"));
                Nvtx.pop();
                rollouts.addAll(rollout);
                if (task != null) for (int i = 0; i < rollout.size(); i++) {
                    ChatTemplate.Example e = rollout.get(i);
                    reward += task.reward(fp.lastWord()[idx[i]], java.util.Arrays.copyOfRange(e.ids(), e.promptLength(), e.ids().length)) / batch;
                }
            }
            int k = 0;
            for (int[] mb : micros) {
                List<ChatTemplate.Example> part = new ArrayList<>();
                for (int i : mb) part.add(on ? rollout.get(k++) : examples.get(i));
                if (fusedLinear != null) microStepFusedLinear(fusedLinear, policy, dpo, second, Seqs.pack(part, text.pad()), pos, batch, s);
                else microStep(fused, policy, dpo, second, Seqs.pack(part, text.pad()), pos, batch, s);
            }
            double lengthSum = 0, totalSum = 0;
            if (on) for (ChatTemplate.Example e : rollout) {
                lengthSum += e.ids().length - e.promptLength();
                totalSum += e.ids().length;
            }
            double[] all = dist.allReduceSum(pack(s, reward, lengthSum, totalSum, on ? rollout.size() : 0), "all-reduce of the metrics");
            unpack(all, s);
            reward = all[PACKED];
            lengthSum = all[PACKED + 1];
            totalSum = all[PACKED + 2];
            double rolloutCount = all[PACKED + 3];
            Map<String, Object> m = new LinkedHashMap<>();
            m.put("loss", s.loss);
            m.put("rlhf_loss", s.loss);
            double ns = Math.max(1, s.sequences);
            m.put("mean_weight", s.weight / ns);
            m.put("expected_reward", s.reward / ns);
            m.put("seq_tea_kl", s.klTea / ns);
            m.put("token_tea_kl", s.tokenKlTea / ns);
            m.put(cfg.variant() == Variant.ALIGNDISTIL || cfg.variant() == Variant.CONTRAST ? "seq_rev_kl" : "seq_ref_kl", s.klSecond / ns);
            if (second != null) m.put("dpo_model_expected_reward", s.teacherReward / ns);
            // reward/kl as the official trainers: (expected_reward - the first step's) / (KL to the second teacher + 1)
            if (Double.isNaN(initReward[0])) initReward[0] = firstExpectedReward(out, s.reward / ns);
            m.put("reward/kl", (s.reward / ns - initReward[0]) / (s.klSecond / ns + 1));
            m.put("selected_rows", s.rows);
            m.put("skipped_sequences", batch - s.sequences);
            if (on) {
                m.put("response_length", lengthSum / rolloutCount);
                m.put("total_length", totalSum / rolloutCount);
                if (second != null) {
                    m.put("seq_reward", s.seqReward / ns);
                    m.put("token_reward", s.tokenReward / ns);
                }
                if (task != null) m.put("true_reward", reward);
            }
            return m;
        });
        if (fusedLinear != null) fusedLinear.close();
        if ((cfg.variant() == Variant.ALIGNDISTIL || cfg.variant() == Variant.CONTRAST) && dist.isMain()) {
            // The regime check over the training rows (on-policy: the rollouts of this process; a resumed run
            // measures those after the resumption only). Data parallel: rank 0 measures all the off-policy rows, or
            // its own rollouts on-policy, and alone writes the file.
            Regime reg = new Regime(cfg, on, text.eos()).measure(dpo, second, Stage.loadFrozen(modelDir, o), on ? rollouts : examples, pos, text.pad(), 64);
            Map<String, Object> sm = reg.summary();
            HfCheckpoint.writeAtomically(out.resolve(REGIME_FILE), ai.aligndistil.io.Json.write(JsonLines.sanitize(sm)) + "\n");
            err.printf("%s: regime: mean alpha %.3f (at the official beta2 %.0f: %.3f), tvd %.3f, KL(dpo||init) %.4f per token, teacher P(EOS) at the first row %.3f (dpo %.3f): %s%n",
                    name, sm.get("mean_alpha"), sm.get("official_beta2"), sm.get("mean_alpha_official_beta2"), sm.get("tvd_mean"), sm.get("kl_dpo_init_per_token"),
                    sm.get("teacher_eos_first_row"), sm.get("dpo_eos_first_row"), Boolean.TRUE.equals(sm.get("in_regime")) ? "in regime" : "OUT OF REGIME");
        }
        return out;
    }

    /** The regime figures of a run ({@link Regime#summary}), in its output folder. */
    public static final String REGIME_FILE = "regime.json";

    /** Number of {@link Sums} fields {@link #pack} puts first. */
    static final int PACKED = 12;

    /** The step's sums, then {@code extra}, as one vector to all-reduce (every entry is a sum over sequences). */
    static double[] pack(Sums s, double... extra) {
        double[] v = new double[PACKED + extra.length];
        double[] f = {s.loss, s.weight, s.reward, s.klTea, s.klSecond, s.tokenKlTea, s.tokenKlSecond, s.teacherReward, s.seqReward, s.tokenReward,
                s.sequences, s.rows};
        System.arraycopy(f, 0, v, 0, PACKED);
        System.arraycopy(extra, 0, v, PACKED, extra.length);
        return v;
    }

    /** Sets the sums of {@code s} from an all-reduced {@link #pack} vector. */
    static void unpack(double[] v, Sums s) {
        s.loss = v[0];
        s.weight = v[1];
        s.reward = v[2];
        s.klTea = v[3];
        s.klSecond = v[4];
        s.tokenKlTea = v[5];
        s.tokenKlSecond = v[6];
        s.teacherReward = v[7];
        s.seqReward = v[8];
        s.tokenReward = v[9];
        s.sequences = (long) v[10];
        s.rows = (long) v[11];
    }

    /** The first logged step's expected reward (so a resumed run keeps its reference), else {@code current}. */
    static double firstExpectedReward(Path out, double current) {
        try {
            List<Map<String, Object>> rows = JsonLines.read(out.resolve("metrics.jsonl"));
            if (!rows.isEmpty() && rows.get(0).get("expected_reward") instanceof Number n) return n.doubleValue();
        } catch (IOException | RuntimeException e) {
            // no usable log: this step is the first
        }
        return current;
    }
}
