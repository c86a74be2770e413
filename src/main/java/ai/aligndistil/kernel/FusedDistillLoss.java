package ai.aligndistil.kernel;

import ai.aligndistil.io.DType;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Objects;

/**
 * The fused AlignDistil token loss: teacher construction, per-token extrapolation weight, reverse KL and its
 * gradient with respect to the student logits, in one call that reads each logit row a few times and writes
 * only the gradient. No [tokens x V] intermediate is ever built.
 *
 * <h2>Use</h2>
 * <pre>{@code
 * FusedDistillLoss loss = FusedDistillLoss.create(LossConfig.defaults());      // backend chosen once, logged once
 * try (FusedDistillLoss.Batch batch = loss.newBatch(B, T, V)) {                // one Batch per thread, reused
 *     batch.student(studentSeg, DType.BF16).dpo(dpoSeg, DType.BF16).second(reverseSeg, DType.BF16)
 *          .mask(maskSeg).grad(gradSeg, DType.F32).weights(weightSeg).tokenLosses(tokenLossSeg);
 *     double l = batch.run();                                                   // validates, then runs natively
 * }
 * }</pre>
 * The {@code FusedDistillLoss} object is immutable and may be shared by threads; a {@link Batch} holds the
 * native argument block of one call and is used by one thread at a time (make one per trainer thread). After
 * its first call a batch allocates nothing: the setters store fields, {@link Batch#run()} validates with plain
 * arithmetic and calls the kernel through a pre-bound method handle.
 *
 * <h2>Contract</h2>
 * Inputs are [B, T, V] tensors with a contiguous vocabulary dimension and arbitrary element strides for B and
 * T, in f32, bf16 or f16; a u8 mask [B, T] (nonzero selects the logit row as it is: no shift) or none (every
 * row). Outputs: the loss (returned), the gradient (f32 or the student's dtype; may be the student logits
 * themselves: {@link Batch#gradInPlace()}), and optionally per-row {@code weight} (alpha_t),
 * {@code token_loss} (coefficient x KL, without the length and batch divisors) and three metrics (expected
 * token reward, KL to the DPO model, KL to the second teacher), each a contiguous f32 [B*T] (metrics:
 * [B*T*3]) buffer. Rows not selected get zero everywhere and are never read. Sequences without a selected
 * row are skipped and not counted; {@link Batch#sequenceDivisor(double)} overrides the count, so gradient
 * accumulation over several calls reproduces one large batch. See native/include/aligndistil.h for the maths.
 *
 * <h2>Errors</h2>
 * Everything is validated in Java before native code runs; bad input throws {@link IllegalArgumentException}
 * with a precise message and writes nothing. A NaN, +inf, or partial -inf in a selected row throws
 * {@link NonFiniteLogitsException} naming the token and column; the kernel finds it in its first pass over
 * the row, and a separate gradient buffer is then left all zero (never half written). When the gradient
 * aliases the student logits, their contents are unspecified after such an error.
 */
public final class FusedDistillLoss {
    private final LossConfig config;
    private final Backend backend;

    private FusedDistillLoss(LossConfig config, Backend backend) {
        this.config = Objects.requireNonNull(config, "config");
        this.backend = backend;
    }

    /**
     * The loss on the automatically chosen backend: for host memory {@code -Daligndistil.backend=reference|cpu|cuda}
     * if set, else the native CPU library, else the Java reference; device memory ({@link Batch#runOnDevice(long)})
     * always runs on CUDA. The choice is logged once per process.
     */
    public static FusedDistillLoss create(LossConfig config) {
        return new FusedDistillLoss(config, Backends.hostDefault());
    }

    /** The loss on an explicit backend; throws {@link IllegalStateException} naming the reason if it is unavailable. */
    public static FusedDistillLoss create(LossConfig config, Backend backend) {
        Backends.require(backend);
        return new FusedDistillLoss(config, backend);
    }

    public LossConfig config() { return config; }

    public Backend backend() { return backend; }

    /** A reusable call frame for tensors of shape [batch, seq, vocab]. */
    public Batch newBatch(long batch, long seq, long vocab) {
        return new Batch(this, batch, seq, vocab);
    }

    /**
     * One call's arguments and native argument block. Not thread-safe: one per thread. Close it to free the
     * native block and any device buffers it allocated.
     */
    public static final class Batch implements AutoCloseable {
        private final FusedDistillLoss op;
        private final long B, T, V;
        private final Arena arena = Arena.ofShared();
        private final MemorySegment problem;
        private final MemorySegment status;

        private MemorySegment student, dpo, second, mask, grad, weight, tokenLoss, metrics;
        private DType studentType, dpoType, secondType, gradType;
        private long ssb, sst, dsb, dst, rsb, rst, msb, mst, gsb, gst;
        private double seqDivisor;
        private int threads;

        private double loss;
        private long selectedRows, sequences;
        private CudaBatch cuda; // device buffers, created on first CUDA use

        Batch(FusedDistillLoss op, long B, long T, long V) {
            if (B < 1 || T < 1 || V < 1) throw new IllegalArgumentException("shape [" + B + ", " + T + ", " + V + "]: every dimension must be >= 1");
            try {
                Math.multiplyExact(Math.multiplyExact(B, T), Math.multiplyExact(V, 4L));
            } catch (ArithmeticException e) {
                throw new IllegalArgumentException("shape [" + B + ", " + T + ", " + V + "] is too large");
            }
            if (op.backend == Backend.REFERENCE && (V > Integer.MAX_VALUE - 16 || B > Integer.MAX_VALUE))
                throw new IllegalArgumentException("the reference backend handles V < 2^31 only");
            this.op = op;
            this.B = B;
            this.T = T;
            this.V = V;
            this.problem = arena.allocate(ProblemStruct.SIZE, 8);
            this.status = arena.allocate(ProblemStruct.STATUS_SIZE, 8);
        }

        public FusedDistillLoss op() { return op; }
        public long batch() { return B; }
        public long seq() { return T; }
        public long vocab() { return V; }

        // ------------------------------------------------------------------ setters (no allocation)

        /** Student logits [B, T, V], contiguous. */
        public Batch student(MemorySegment seg, DType dtype) { return student(seg, dtype, T * V, V); }

        /** Student logits with element strides for the B and T dimensions (V is contiguous). */
        public Batch student(MemorySegment seg, DType dtype, long strideB, long strideT) {
            student = seg; studentType = dtype; ssb = strideB; sst = strideT;
            return this;
        }

        public Batch dpo(MemorySegment seg, DType dtype) { return dpo(seg, dtype, T * V, V); }

        public Batch dpo(MemorySegment seg, DType dtype, long strideB, long strideT) {
            dpo = seg; dpoType = dtype; dsb = strideB; dst = strideT;
            return this;
        }

        /** The second teacher: reverse DPO (aligndistil, contrast) or reference model (adaptive, theorem1); unused by gkd. */
        public Batch second(MemorySegment seg, DType dtype) { return second(seg, dtype, T * V, V); }

        public Batch second(MemorySegment seg, DType dtype, long strideB, long strideT) {
            second = seg; secondType = dtype; rsb = strideB; rst = strideT;
            return this;
        }

        /** u8 mask [B, T], contiguous; nonzero selects the row. {@code null} selects every row. */
        public Batch mask(MemorySegment seg) { return mask(seg, T, 1); }

        public Batch mask(MemorySegment seg, long strideB, long strideT) {
            mask = seg; msb = strideB; mst = strideT;
            return this;
        }

        /** Gradient output [B, T, V], contiguous, f32 or the student's dtype. */
        public Batch grad(MemorySegment seg, DType dtype) { return grad(seg, dtype, T * V, V); }

        public Batch grad(MemorySegment seg, DType dtype, long strideB, long strideT) {
            grad = seg; gradType = dtype; gsb = strideB; gst = strideT;
            return this;
        }

        /** Write the gradient over the student logits (same dtype and strides). Set the student first. */
        public Batch gradInPlace() {
            if (student == null) throw new IllegalArgumentException("set the student logits before gradInPlace()");
            return grad(student, studentType, ssb, sst);
        }

        /** Optional f32 [B*T] output: alpha_t per row (0 where not selected). {@code null} to skip. */
        public Batch weights(MemorySegment seg) { weight = seg; return this; }

        /** Optional f32 [B*T] output: coefficient x KL per row (0 where not selected). */
        public Batch tokenLosses(MemorySegment seg) { tokenLoss = seg; return this; }

        /** Optional f32 [B*T*3] output: expected token reward, KL(p||p_dpo), KL(p||p_second) per row. */
        public Batch metrics(MemorySegment seg) { metrics = seg; return this; }

        /** Number of sequences to divide by; 0 (default) = those with a selected row in this call. */
        public Batch sequenceDivisor(double n) {
            if (!Double.isFinite(n) || n < 0) throw new IllegalArgumentException("sequence divisor must be finite and >= 0 (0 = count), got " + n);
            seqDivisor = n;
            return this;
        }

        /** CPU backend threads for this batch; 0 (default) = the library's pool size ({@code aligndistil.cpu.threads}). */
        public Batch threads(int n) {
            if (n < 0) throw new IllegalArgumentException("threads must be >= 0, got " + n);
            threads = n;
            return this;
        }

        // ------------------------------------------------------------------ results of the last call

        public double loss() { return loss; }
        public long selectedRows() { return selectedRows; }
        public long sequences() { return sequences; }
        public double sequenceDivisor() { return seqDivisor; }

        // ------------------------------------------------------------------ running

        /**
         * Runs on host memory and returns the loss. On the CUDA backend host buffers are staged through device
         * buffers owned by this batch (allocated on first use); use {@link #runOnDevice(long)} for device memory.
         */
        public double run() {
            Backend be = op.backend;
            validate(be != Backend.REFERENCE);
            switch (be) {
                case REFERENCE -> {
                    try {
                        loss = FusedDistillLossReference.run(this);
                    } catch (NonFiniteLogitsException e) {
                        onError();
                        throw e;
                    }
                }
                case CPU -> {
                    fillProblem();
                    int rc = NativeCpu.fdl(problem, status, threads);
                    if (rc != ProblemStruct.AD_OK) throw nativeError(rc);
                    loss = ProblemStruct.getDouble(status, ProblemStruct.ST_LOSS);
                    selectedRows = ProblemStruct.getLong(status, ProblemStruct.ST_SELECTED);
                    sequences = ProblemStruct.getLong(status, ProblemStruct.ST_SEQUENCES);
                }
                case CUDA -> {
                    if (cuda == null) cuda = new CudaBatch(this);
                    loss = cuda.runStaged();
                }
            }
            return loss;
        }

        /**
         * Launches on the GPU, asynchronously on {@code stream} (a cudaStream_t, 0 = default stream). Every tensor
         * segment holds a device address (for example {@code MemorySegment.ofAddress(ptr).reinterpret(bytes)}).
         * The loss lands in {@link #deviceLoss()} (one f64) and the row status in {@link #deviceStatus()} when
         * the stream gets there; {@link #synchronize(long)} waits, checks and returns the loss. The training stages
         * pass libtorch's current stream of the logits' device (DistillStage.microStep, ChunkedFusedLinearLoss),
         * so the launch sits between the forwards and the backward on one stream, with no synchronisation.
         */
        public void runOnDevice(long stream) {
            // Device memory always means the CUDA backend, whatever the host default of this loss is.
            if (!NativeCuda.available()) throw new IllegalStateException("device memory needs the cuda backend, which is unavailable: " + NativeCuda.problem());
            validate(false);
            if (cuda == null) cuda = new CudaBatch(this);
            fillProblem();
            cuda.launch(stream);
        }

        /** Waits for {@code stream}, throws if the kernel reported bad input, returns the loss. */
        public double synchronize(long stream) {
            if (cuda == null) throw new IllegalStateException("nothing was launched on this batch");
            return cuda.synchronize(stream);
        }

        /** Device buffer with the last loss (f64), valid once the stream has passed the launch. */
        public MemorySegment deviceLoss() { return cuda == null ? null : cuda.dLoss; }

        /** Device buffer with the last status: int64 code, token, column, selected rows. */
        public MemorySegment deviceStatus() { return cuda == null ? null : cuda.dStatus; }

        @Override
        public void close() {
            if (cuda != null) cuda.close();
            cuda = null;
            arena.close();
        }

        // ------------------------------------------------------------------ validation

        private void validate(boolean nativeMemory) {
            checkTensor("student", student, studentType, ssb, sst, false, nativeMemory);
            checkTensor("dpo", dpo, dpoType, dsb, dst, false, nativeMemory);
            if (op.config.variant().needsSecondTeacher())
                checkTensor(op.config.variant().secondLabel, second, secondType, rsb, rst, false, nativeMemory);
            checkTensor("grad", grad, gradType, gsb, gst, true, nativeMemory);
            if (gradType != DType.F32 && gradType != studentType)
                throw new IllegalArgumentException("grad dtype " + gradType + " must be f32 or the student's dtype (" + studentType + ")");
            if (mask != null) {
                checkAlive("mask", mask, nativeMemory);
                if (msb < 0 || mst < 0) throw new IllegalArgumentException("mask strides must be >= 0, got (" + msb + ", " + mst + ")");
                long need = (B - 1) * msb + (T - 1) * mst + 1;
                if (mask.byteSize() < need)
                    throw new IllegalArgumentException("mask segment has " + mask.byteSize() + " bytes, [" + B + ", " + T + "] u8 with strides (" + msb + ", " + mst + ") needs " + need);
            }
            checkOutput("weight", weight, B * T * 4, nativeMemory);
            checkOutput("token_loss", tokenLoss, B * T * 4, nativeMemory);
            checkOutput("metrics", metrics, B * T * 3 * 4, nativeMemory);

            // Aliasing: the gradient may be the student logits exactly; nothing else may overlap an output.
            long gBytes = extent(gsb, gst, gradType);
            if (overlaps(grad, gBytes, student, extent(ssb, sst, studentType))) {
                boolean exact = grad.address() == student.address() && sameMemory(grad, student)
                        && gradType == studentType && gsb == ssb && gst == sst;
                if (!exact) throw new IllegalArgumentException("grad overlaps the student logits but is not the same view (same address, dtype and strides); use gradInPlace() or separate memory");
            }
            if (overlaps(grad, gBytes, dpo, extent(dsb, dst, dpoType))) throw new IllegalArgumentException("grad overlaps the dpo logits");
            if (op.config.variant().needsSecondTeacher() && overlaps(grad, gBytes, second, extent(rsb, rst, secondType)))
                throw new IllegalArgumentException("grad overlaps the second-teacher logits");
            if (mask != null && overlaps(grad, gBytes, mask, (B - 1) * msb + (T - 1) * mst + 1)) throw new IllegalArgumentException("grad overlaps the mask");
            // No arrays here: this runs on every call and must not allocate.
            long rows4 = B * T * 4;
            checkOutputOverlaps("weight", weight, rows4, gBytes);
            checkOutputOverlaps("token_loss", tokenLoss, rows4, gBytes);
            checkOutputOverlaps("metrics", metrics, rows4 * 3, gBytes);
            if (overlaps(weight, rows4, tokenLoss, rows4)) throw new IllegalArgumentException("weight overlaps token_loss");
            if (overlaps(weight, rows4, metrics, rows4 * 3)) throw new IllegalArgumentException("weight overlaps metrics");
            if (overlaps(tokenLoss, rows4, metrics, rows4 * 3)) throw new IllegalArgumentException("token_loss overlaps metrics");
        }

        private void checkOutputOverlaps(String name, MemorySegment out, long size, long gBytes) {
            if (out == null) return;
            if (overlaps(out, size, grad, gBytes)) throw new IllegalArgumentException(name + " overlaps grad");
            if (overlaps(out, size, student, extent(ssb, sst, studentType))) throw new IllegalArgumentException(name + " overlaps the student logits");
            if (overlaps(out, size, dpo, extent(dsb, dst, dpoType))) throw new IllegalArgumentException(name + " overlaps the dpo logits");
            if (op.config.variant().needsSecondTeacher() && overlaps(out, size, second, extent(rsb, rst, secondType)))
                throw new IllegalArgumentException(name + " overlaps the second-teacher logits");
            if (mask != null && overlaps(out, size, mask, (B - 1) * msb + (T - 1) * mst + 1)) throw new IllegalArgumentException(name + " overlaps the mask");
        }

        private void checkAlive(String what, MemorySegment seg, boolean nativeMemory) {
            if (!seg.scope().isAlive()) throw new IllegalArgumentException(what + " segment is closed (its arena was closed)");
            if (nativeMemory && !seg.isNative())
                throw new IllegalArgumentException(what + " segment is on the Java heap; the " + op.backend + " backend needs native memory (allocate it from an Arena)");
            if (seg.isReadOnly() && (what.equals("grad") || what.equals("weight") || what.equals("token_loss") || what.equals("metrics")))
                throw new IllegalArgumentException(what + " segment is read-only");
        }

        private void checkTensor(String what, MemorySegment seg, DType dt, long sb, long st, boolean output, boolean nativeMemory) {
            if (seg == null) throw new IllegalArgumentException(what + " logits are not set");
            if (dt == null) throw new IllegalArgumentException(what + " dtype is not set");
            ProblemStruct.code(what, dt);
            checkAlive(what, seg, nativeMemory);
            if (sb < 0 || st < 0) throw new IllegalArgumentException(what + " strides must be >= 0, got (" + sb + ", " + st + ")");
            long elems;
            try {
                elems = Math.addExact(Math.addExact(Math.multiplyExact(B - 1, sb), Math.multiplyExact(T - 1, st)), V);
                Math.multiplyExact(elems, (long) dt.byteSize);
            } catch (ArithmeticException e) {
                throw new IllegalArgumentException(what + " strides (" + sb + ", " + st + ") overflow");
            }
            long need = elems * dt.byteSize;
            if (seg.byteSize() < need)
                throw new IllegalArgumentException(what + " segment has " + seg.byteSize() + " bytes; [" + B + ", " + T + ", " + V + "] " + dt
                        + " with strides (" + sb + ", " + st + ", 1) needs " + need);
            if (output && (st < V || (B > 1 && sb < (T - 1) * st + V)))
                throw new IllegalArgumentException(what + " rows overlap: strides (" + sb + ", " + st + ") for V = " + V + " would write one element twice");
            if (seg.address() % dt.byteSize != 0 && seg.isNative())
                throw new IllegalArgumentException(what + " segment address is not aligned to its " + dt.byteSize + "-byte elements");
        }

        private void checkOutput(String what, MemorySegment seg, long need, boolean nativeMemory) {
            if (seg == null) return;
            checkAlive(what, seg, nativeMemory);
            if (seg.byteSize() < need) throw new IllegalArgumentException(what + " segment has " + seg.byteSize() + " bytes, needs " + need + " (f32 per row)");
            if (seg.isNative() && seg.address() % 4 != 0) throw new IllegalArgumentException(what + " segment is not 4-byte aligned");
        }

        private long extent(long sb, long st, DType dt) {
            return ((B - 1) * sb + (T - 1) * st + V) * dt.byteSize;
        }

        private static boolean sameMemory(MemorySegment a, MemorySegment b) {
            if (a.isNative() && b.isNative()) return true;
            if (a.isNative() != b.isNative()) return false;
            return a.heapBase().equals(b.heapBase()); // heap segments: only the reference backend gets here
        }

        private static boolean overlaps(MemorySegment a, long aBytes, MemorySegment b, long bBytes) {
            if (a == null || b == null) return false;
            if (!sameMemory(a, b)) return false;
            long a0 = a.address(), b0 = b.address();
            return a0 < b0 + bBytes && b0 < a0 + aBytes;
        }

        // ------------------------------------------------------------------ native argument block

        void fillProblem() {
            MemorySegment p = problem;
            LossConfig c = op.config;
            ProblemStruct.putLong(p, ProblemStruct.BATCH, B);
            ProblemStruct.putLong(p, ProblemStruct.SEQ, T);
            ProblemStruct.putLong(p, ProblemStruct.VOCAB, V);
            ProblemStruct.putPtr(p, ProblemStruct.STUDENT, student);
            ProblemStruct.putLong(p, ProblemStruct.STUDENT_DTYPE, ProblemStruct.code("student", studentType));
            ProblemStruct.putLong(p, ProblemStruct.STUDENT_SB, ssb);
            ProblemStruct.putLong(p, ProblemStruct.STUDENT_ST, sst);
            ProblemStruct.putPtr(p, ProblemStruct.DPO, dpo);
            ProblemStruct.putLong(p, ProblemStruct.DPO_DTYPE, ProblemStruct.code("dpo", dpoType));
            ProblemStruct.putLong(p, ProblemStruct.DPO_SB, dsb);
            ProblemStruct.putLong(p, ProblemStruct.DPO_ST, dst);
            boolean sec = c.variant().needsSecondTeacher();
            ProblemStruct.putPtr(p, ProblemStruct.SECOND, sec ? second : null);
            ProblemStruct.putLong(p, ProblemStruct.SECOND_DTYPE, sec ? ProblemStruct.code("second", secondType) : ProblemStruct.code("second", DType.F32));
            ProblemStruct.putLong(p, ProblemStruct.SECOND_SB, sec ? rsb : 0);
            ProblemStruct.putLong(p, ProblemStruct.SECOND_ST, sec ? rst : 0);
            ProblemStruct.putPtr(p, ProblemStruct.MASK, mask);
            ProblemStruct.putLong(p, ProblemStruct.MASK_SB, msb);
            ProblemStruct.putLong(p, ProblemStruct.MASK_ST, mst);
            ProblemStruct.putPtr(p, ProblemStruct.GRAD, grad);
            ProblemStruct.putLong(p, ProblemStruct.GRAD_DTYPE, ProblemStruct.code("grad", gradType));
            ProblemStruct.putLong(p, ProblemStruct.GRAD_SB, gsb);
            ProblemStruct.putLong(p, ProblemStruct.GRAD_ST, gst);
            ProblemStruct.putPtr(p, ProblemStruct.WEIGHT, weight);
            ProblemStruct.putPtr(p, ProblemStruct.TOKEN_LOSS, tokenLoss);
            ProblemStruct.putPtr(p, ProblemStruct.METRICS, metrics);
            ProblemStruct.putLong(p, ProblemStruct.VARIANT, c.variant().code);
            ProblemStruct.putLong(p, ProblemStruct.LENGTH_NORM, c.lengthNorm() ? 1 : 0);
            ProblemStruct.putDouble(p, ProblemStruct.BETA, c.beta());
            ProblemStruct.putDouble(p, ProblemStruct.BETA2, c.beta2());
            ProblemStruct.putDouble(p, ProblemStruct.EPSILON, c.epsilon());
            ProblemStruct.putDouble(p, ProblemStruct.TEMPERATURE, c.temperature());
            ProblemStruct.putDouble(p, ProblemStruct.STUDENT_TEMPERATURE, c.studentTemperature());
            ProblemStruct.putDouble(p, ProblemStruct.SEQ_DIVISOR, seqDivisor);
        }

        MemorySegment problemSegment() { return problem; }

        /** Maps a native status to an exception, after leaving the outputs in their documented error state. */
        RuntimeException nativeError(int rc) {
            long token = ProblemStruct.getLong(status, ProblemStruct.ST_TOKEN);
            long column = ProblemStruct.getLong(status, ProblemStruct.ST_COLUMN);
            return errorFromStatus(rc, token, column, true);
        }

        RuntimeException errorFromStatus(long rc, long token, long column, boolean hostReadable) {
            if (rc == ProblemStruct.AD_ERR_NONFINITE || rc == ProblemStruct.AD_ERR_EMPTY_ROW) {
                NonFiniteLogitsException e = nonFinite(token, rc == ProblemStruct.AD_ERR_EMPTY_ROW ? -1 : column, hostReadable);
                if (hostReadable) onError();
                return e;
            }
            if (hostReadable) onError();
            if (rc == ProblemStruct.AD_ERR_INVALID_ARGUMENT)
                return new IllegalArgumentException("the native kernel rejected the arguments (" + ProblemStruct.codeName(rc) + ")");
            return new IllegalStateException("fused distill loss failed: " + ProblemStruct.codeName(rc)
                    + (rc == ProblemStruct.AD_ERR_CUDA ? ": " + NativeCuda.lastError() : ""));
        }

        NonFiniteLogitsException nonFinite(long token, long column) { return nonFinite(token, column, true); }

        private NonFiniteLogitsException nonFinite(long token, long column, boolean hostReadable) {
            long b = token / T, t = token % T;
            StringBuilder m = new StringBuilder();
            if (column < 0) {
                m.append("selected row at batch ").append(b).append(", position ").append(t).append(" (token ").append(token)
                        .append(") has no finite logit: every column is -inf");
            } else {
                m.append("non-finite logit in the selected row at batch ").append(b).append(", position ").append(t)
                        .append(" (token ").append(token).append("), column ").append(column);
                if (hostReadable && !(grad == student && student != null)) {
                    m.append(": student=").append(studentAt(b, t, column)).append(", dpo=").append(dpoAt(b, t, column));
                    if (op.config.variant().needsSecondTeacher()) m.append(", ").append(op.config.variant().secondTensorName.replace("_logits", "")).append('=').append(secondAt(b, t, column));
                    m.append(" (NaN and +inf are never valid; -inf must be in all inputs of a column or in none)");
                }
            }
            return new NonFiniteLogitsException(m.toString(), b, t, column);
        }

        /** Error state: a separate gradient buffer is zeroed whole; optional outputs zeroed; loss 0. */
        private void onError() {
            loss = 0;
            selectedRows = 0;
            sequences = 0;
            boolean inPlace = grad != null && student != null && grad.address() == student.address() && sameMemory(grad, student);
            if (grad != null && !inPlace) for (long b = 0; b < B; b++) for (long t = 0; t < T; t++) zeroGradRow(b, t);
            if (weight != null) weight.asSlice(0, B * T * 4).fill((byte) 0);
            if (tokenLoss != null) tokenLoss.asSlice(0, B * T * 4).fill((byte) 0);
            if (metrics != null) metrics.asSlice(0, B * T * 12).fill((byte) 0);
        }

        // ------------------------------------------------------------------ element access (reference backend)

        boolean selected(long b, long t) { return mask == null || mask.get(ValueLayout.JAVA_BYTE, b * msb + t * mst) != 0; }

        double studentAt(long b, long t, long v) { return Elements.get(student, studentType, b * ssb + t * sst + v); }

        double dpoAt(long b, long t, long v) { return Elements.get(dpo, dpoType, b * dsb + t * dst + v); }

        double secondAt(long b, long t, long v) { return Elements.get(second, secondType, b * rsb + t * rst + v); }

        void putGrad(long b, long t, long v, double g) { Elements.set(grad, gradType, b * gsb + t * gst + v, (float) g); }

        void zeroGradRow(long b, long t) {
            long off = (b * gsb + t * gst) * gradType.byteSize;
            grad.asSlice(off, V * gradType.byteSize).fill((byte) 0);
        }

        void putRowOutputs(long token, double alpha, double tokenLossValue, double reward, double klDpo, double klSecond) {
            if (weight != null) weight.setAtIndex(Elements.F32, token, (float) alpha);
            if (tokenLoss != null) tokenLoss.setAtIndex(Elements.F32, token, (float) tokenLossValue);
            if (metrics != null) {
                metrics.setAtIndex(Elements.F32, token * 3, (float) reward);
                metrics.setAtIndex(Elements.F32, token * 3 + 1, (float) klDpo);
                metrics.setAtIndex(Elements.F32, token * 3 + 2, (float) klSecond);
            }
        }

        void setCounts(long selected, long seqs) {
            selectedRows = selected;
            sequences = seqs;
        }

        void setResult(double l, long selected, long seqs) {
            loss = l;
            selectedRows = selected;
            sequences = seqs;
        }

        // accessors for the CUDA staging path
        MemorySegment studentSeg() { return student; }
        MemorySegment dpoSeg() { return dpo; }
        MemorySegment dpoForTests() { return dpo; }
        MemorySegment secondSeg() { return second; }
        MemorySegment maskSeg() { return mask; }
        MemorySegment gradSeg() { return grad; }
        MemorySegment weightSeg() { return weight; }
        MemorySegment tokenLossSeg() { return tokenLoss; }
        MemorySegment metricsSeg() { return metrics; }
        DType studentType() { return studentType; }
        DType dpoType() { return dpoType; }
        DType secondType() { return secondType; }
        DType gradType() { return gradType; }
        long[] strides() { return new long[] {ssb, sst, dsb, dst, rsb, rst, msb, mst, gsb, gst}; }
    }
}
