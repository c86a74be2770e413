package ai.aligndistil.model;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandles;
import java.lang.invoke.MethodType;
import java.util.Objects;

import org.bytedeco.javacpp.Pointer;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.MemoryFormatOptional;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

import ai.aligndistil.kernel.Backend;
import ai.aligndistil.io.DType;
import ai.aligndistil.kernel.FusedDistillLoss;
import ai.aligndistil.kernel.LossConfig;
import ai.aligndistil.kernel.NonFiniteLogitsException;

/**
 * ChunkedFusedLinearLoss (libtorch side): the AlignDistil loss of the student's LM head, chunked over tokens, so the
 * [N, V] logits of the student and the two teachers never exist at once.
 *
 * <p><b>Computes</b>, for the student's final hidden states {@code Xs} [B, T, H] and head {@code Ws} [V, H]
 * (logits {@code Xs Ws^T}), the two frozen teachers given either as hidden states and head or as logits
 * [B, T, V], a u8 mask [B, T] and a {@link LossConfig}: the loss of {@link FusedDistillLoss} (same maths,
 * native/include/aligndistil.h), {@code dX = d loss / d Xs} [B, T, H] in the hidden dtype and
 * {@code dW = d loss / d Ws} [V, H] accumulated in float32. Per chunk of C rows: three libtorch
 * {@code mm} into reused [C, V] workspace tensors, the native row kernel writing the student gradient G in
 * place over the student chunk, then {@code dX_chunk = G Ws} and {@code dW += G^T (s X_chunk)}.
 *
 * <p><b>Normalisation across chunks.</b> The row kernel runs with {@code length_norm = 0} and
 * {@code seq_divisor = 1}, so G and token_loss carry only the per-token coefficient. The per-row scale
 * {@code s_bt = (1/n_b if length_norm) / N} comes from the whole mask before the first chunk; then
 * {@code loss = sum s_bt token_loss_bt} (in double), the dX rows are multiplied by s and dW uses s-scaled X
 * rows: O(C x H) work per chunk instead of O(C x V).
 *
 * <p><b>Never materialises</b> any [N, V] tensor: peak extra memory is three [C, V] tensors in the logits
 * dtypes (two when the teachers come as logits, which the caller already holds), an O(N) row buffer, the
 * [V, H] float32 dW and, for bfloat16, one [C, H] scaled copy (plus a [V, H] 16-bit partial product per chunk
 * where libtorch has no {@code addmm} with a float32 {@code out_dtype}, as on CPU). <b>Overwrites</b> only its own workspace
 * (the student chunk becomes G) and the returned tensors; the inputs are read only.
 * <b>Stream:</b> CPU tensors run libtorch's intra-op pool and the native CPU kernel's pool with
 * {@link TorchRuntime#threads()} threads; CUDA tensors run every matmul and the row kernel (NativeCuda on the
 * tensors' data pointers) on libtorch's current stream of the tensors' device, synchronising once per chunk
 * to read the kernel status. <b>The CUDA path is compile-checked only</b>: it has never run on a GPU.
 *
 * <p><b>Knob.</b> Chunk size C: constructor argument, else the system property {@value #CHUNK_PROPERTY}, else
 * {@value #DEFAULT_CHUNK_CPU} rows for CPU tensors and {@value #DEFAULT_CHUNK_CUDA} for CUDA tensors
 * (3 C V bf16 bytes: 0.93 GB at C = 1024, V = 151,936, under 5 % of the unfused footprint at 16,384 tokens). Memory: on CPU f32
 * at V = 151,936 the workspace is 3 x 256 x V x 4 B = 467 MB; the unfused path holds 3 N V x 4 B plus the
 * gradient.
 *
 * <p>The workspace is cached across calls (retained outside the caller's {@code PointerScope}) and freed by
 * {@link #close()}; each chunk runs in its own {@code PointerScope}. Not thread-safe: one instance per thread.
 */
@SuppressWarnings({"restricted", "try"})
public final class ChunkedFusedLinearLoss implements AutoCloseable {
    /** System property for the chunk size in token rows. */
    public static final String CHUNK_PROPERTY = "aligndistil.fusedLinear.chunk";
    public static final int DEFAULT_CHUNK_CPU = 256;
    public static final int DEFAULT_CHUNK_CUDA = 1024;

    /** A teacher: hidden states [B, T, H'] with its head [V, H'], or its logits [B, T, V]. */
    public record Teacher(Tensor hidden, Tensor head, Tensor logits) {
        public static Teacher hidden(Tensor hidden, Tensor head) {
            return new Teacher(Objects.requireNonNull(hidden, "hidden"), Objects.requireNonNull(head, "head"), null);
        }

        public static Teacher logits(Tensor logits) { return new Teacher(null, null, Objects.requireNonNull(logits, "logits")); }
    }

    /**
     * The result of one call: the loss, dX [B, T, H] (hidden dtype), dW [V, H] float32, and the counts of
     * selected rows and sequences with a selected row. The tensors belong to the caller's scope.
     */
    public record Result(double loss, Tensor dHidden, Tensor dHead, long selectedRows, long sequences) {}

    /**
     * Sees each chunk's teacher logits [rows, V] (contiguous, on the tensors' device) before the row kernel
     * runs, for metrics that need them; chunks without a selected row are skipped. {@code second} is null
     * for gkd. The tensors are workspace: read them, never keep them.
     */
    public interface ChunkListener {
        void teacherChunk(long firstRow, long rows, Tensor dpo, Tensor second);
    }

    private final LossConfig config;
    private final FusedDistillLoss rowLoss;
    private final int chunkOption;
    private double seqDivisor;
    private MemorySegment weightsOut, metricsOut;
    private ChunkListener listener;

    // Workspace cached across calls (retained references; released by close()).
    private Tensor wsStudent, wsDpo, wsSecond;
    private long wsRows, wsVocab;
    private String wsKey = "";
    private FusedDistillLoss.Batch fullBatch;
    private long fullBatchRows, fullBatchVocab;
    private FusedDistillLoss cudaRowLoss;

    /** Chunk size from {@value #CHUNK_PROPERTY}, else the per-device default. */
    public ChunkedFusedLinearLoss(LossConfig config) { this(config, 0); }

    /**
     * @param chunk rows per chunk (>= 1), or 0 for {@value #CHUNK_PROPERTY} / the per-device default
     */
    public ChunkedFusedLinearLoss(LossConfig config, int chunk) {
        TorchRuntime.init();
        this.config = Objects.requireNonNull(config, "config");
        if (chunk < 0) throw new IllegalArgumentException("chunk must be >= 1 (0 = default), got " + chunk);
        this.chunkOption = chunk > 0 ? chunk : propertyChunk();
        // The row kernel sees one chunk at a time: no length norm, no divisor; both are applied here (s_bt).
        this.rowLoss = FusedDistillLoss.create(config.withLengthNorm(false));
    }

    private static int propertyChunk() {
        String s = System.getProperty(CHUNK_PROPERTY);
        if (s == null || s.isBlank()) return 0;
        try {
            int c = Integer.parseInt(s.trim());
            if (c < 1) throw new NumberFormatException();
            return c;
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("-D" + CHUNK_PROPERTY + " must be a positive integer, got '" + s + "'");
        }
    }

    public LossConfig config() { return config; }

    /** The chunk size for tensors on CUDA ({@code cuda = true}) or CPU. */
    public int chunk(boolean cuda) {
        return chunkOption > 0 ? chunkOption : (cuda ? DEFAULT_CHUNK_CUDA : DEFAULT_CHUNK_CPU);
    }

    /** Number of sequences to divide by; 0 (default) = those with a selected row (as {@link FusedDistillLoss.Batch#sequenceDivisor}). */
    public ChunkedFusedLinearLoss sequenceDivisor(double n) {
        if (!Double.isFinite(n) || n < 0) throw new IllegalArgumentException("sequence divisor must be finite and >= 0 (0 = count), got " + n);
        seqDivisor = n;
        return this;
    }

    /** Optional host f32 [B*T] output: alpha_t per row (0 where not selected); null to skip. */
    public ChunkedFusedLinearLoss weights(MemorySegment seg) { weightsOut = seg; return this; }

    /** Optional host f32 [B*T*3] output: the kernel's three metrics per row; null to skip. */
    public ChunkedFusedLinearLoss metrics(MemorySegment seg) { metricsOut = seg; return this; }

    /** Optional per-chunk view of the teacher logits; null for none. */
    public ChunkedFusedLinearLoss listener(ChunkListener l) { listener = l; return this; }

    /**
     * Loss, dX and dW for one batch.
     *
     * @param hidden student final hidden states [B, T, H] (float32 or bfloat16; need not require grad)
     * @param head   student LM head [V, H], same dtype and device
     * @param dpo    the DPO teacher
     * @param second the second teacher (reverse DPO or reference); null for gkd
     * @param mask   host u8 [B*T] (nonzero selects the row), or null for every row
     */
    public Result run(Tensor hidden, Tensor head, Teacher dpo, Teacher second, MemorySegment mask) {
        // ---------------------------------------------------------------- validation (before any native work)
        if (hidden == null || head == null) throw new IllegalArgumentException("hidden and head are required");
        if (hidden.dim() != 3) throw new IllegalArgumentException("hidden must be [B, T, H], got " + hidden.dim() + " dims");
        if (head.dim() != 2) throw new IllegalArgumentException("head must be [V, H], got " + head.dim() + " dims");
        long B = hidden.size(0), T = hidden.size(1), H = hidden.size(2), V = head.size(0), N = B * T;
        if (B < 1 || T < 1 || H < 1 || V < 1) throw new IllegalArgumentException("empty shape: hidden [" + B + ", " + T + ", " + H + "], head [" + V + ", " + head.size(1) + "]");
        if (head.size(1) != H) throw new IllegalArgumentException("head [" + V + ", " + head.size(1) + "] does not match hidden size " + H);
        DType dt = dtypeOf("hidden", hidden);
        if (head.scalar_type().value != hidden.scalar_type().value) throw new IllegalArgumentException("head dtype differs from the hidden states' dtype");
        boolean cuda = hidden.is_cuda();
        if (head.is_cuda() != cuda) throw new IllegalArgumentException("hidden and head are on different devices");
        boolean needSecond = config.variant().needsSecondTeacher();
        if (dpo == null) throw new IllegalArgumentException("the dpo teacher is required");
        if (needSecond && second == null) throw new IllegalArgumentException(config.variant().id() + " needs the second teacher (" + "second teacher" + ")");
        checkTeacher("dpo", dpo, B, T, V, cuda);
        if (needSecond) checkTeacher("second teacher", second, B, T, V, cuda);
        if (mask != null && mask.byteSize() < N) throw new IllegalArgumentException("mask has " + mask.byteSize() + " bytes, [" + B + ", " + T + "] needs " + N);
        if (weightsOut != null && weightsOut.byteSize() < N * 4) throw new IllegalArgumentException("weights output needs " + N * 4 + " bytes");
        if (metricsOut != null && metricsOut.byteSize() < N * 12) throw new IllegalArgumentException("metrics output needs " + N * 12 + " bytes");
        int C = (int) Math.min(chunk(cuda), N);

        // ---------------------------------------------------------------- per-row scales from the whole mask
        double[] s = new double[(int) N];
        long selected = 0, sequences = 0;
        long[] chunkSelected = new long[(int) ((N + C - 1) / C)];
        int[] nb = new int[(int) B];
        for (int b = 0; b < B; b++) {
            for (long t = 0; t < T; t++) if (mask == null || mask.get(ValueLayout.JAVA_BYTE, b * T + t) != 0) nb[b]++;
            if (nb[b] > 0) sequences++;
            selected += nb[b];
        }
        double divisor = seqDivisor > 0 ? seqDivisor : sequences;
        float[] sf = new float[(int) N];
        for (int b = 0; b < B; b++) {
            if (nb[b] == 0) continue;
            double sb = (config.lengthNorm() ? 1.0 / nb[b] : 1.0) / divisor;
            for (long t = 0; t < T; t++) {
                int r = (int) (b * T + t);
                if (mask == null || mask.get(ValueLayout.JAVA_BYTE, r) != 0) {
                    s[r] = sb;
                    sf[r] = (float) sb;
                    chunkSelected[r / C]++;
                }
            }
        }

        try (NoGradGuard ng = new NoGradGuard()) {
            Tensor x = hidden.contiguous().view(N, H);
            Tensor w = head.contiguous();
            Tensor dX = torch.zeros(new long[] {B, T, H}, like(hidden, hidden.scalar_type()));
            Tensor dXf = dX.view(N, H);
            Tensor dW = torch.zeros(new long[] {V, H}, like(hidden, ScalarType.Float));
            if (selected == 0) return new Result(0.0, dX, dW, 0, 0);
            Tensor scales = toDevice(Tensors.fromFloats(sf, N, 1), hidden);
            Tensor tokenLoss = torch.zeros(new long[] {N}, like(hidden, ScalarType.Float));
            Tensor weights = weightsOut == null ? null : torch.zeros(new long[] {N}, like(hidden, ScalarType.Float));
            Tensor metrics = metricsOut == null ? null : torch.zeros(new long[] {N, 3}, like(hidden, ScalarType.Float));
            Tensor maskDev = null;
            if (mask != null) {
                Tensor m = torch.empty(new long[] {N}, new TensorOptions(ScalarType.Byte), new MemoryFormatOptional());
                MemorySegment.copy(mask, 0, Tensors.segment(m), 0, N);
                maskDev = toDevice(m, hidden);
            }
            Teacher[] teachers = {prepareTeacher(dpo, N), needSecond ? prepareTeacher(second, N) : null};
            ensureWorkspace(C, V, hidden, teachers);
            long stream = cuda ? CudaStreams.current() : 0;

            for (long r0 = 0, k = 0; r0 < N; r0 += C, k++) {
                long c = Math.min(C, N - r0);
                if (chunkSelected[(int) k] == 0) continue; // G = 0: dX rows stay 0, dW unchanged
                try (PointerScope chunkScope = new PointerScope()) {
                    Tensor xc = x.narrow(0, r0, c);
                    Tensor zs = wsStudent.narrow(0, 0, c);
                    torch.mm_out(zs, xc, w.t());
                    Tensor zd = teacherChunk(teachers[0], wsDpo, r0, c);
                    Tensor z2 = needSecond ? teacherChunk(teachers[1], wsSecond, r0, c) : null;
                    if (listener != null) listener.teacherChunk(r0, c, zd, z2);
                    rowKernel(cuda, stream, r0, c, C, T, V, dt, zs, zd, z2, maskDev, tokenLoss, weights, metrics);
                    // zs now holds G (coef only). dX rows = s * (G W); dW += G^T (s X).
                    Tensor sc = scales.narrow(0, r0, c);
                    Tensor dxc = dXf.narrow(0, r0, c);
                    torch.mm_out(dxc, zs, w);
                    dxc.mul_(sc);
                    Tensor xs = dt == DType.F32 ? xc.mul(sc) : xc.to(ScalarType.Float).mul(sc).to(hidden.scalar_type());
                    if (dt == DType.F32) dW.addmm_(zs.t(), xs);
                    else accumulateHalf(dW, zs, xs);
                }
            }
            if (cuda) CudaStreams.synchronize(stream);
            float[] tl = Tensors.toFloats(tokenLoss.cpu());
            double loss = 0;
            for (int r = 0; r < N; r++) if (s[r] != 0) loss += s[r] * tl[r];
            if (weights != null) MemorySegment.copy(Tensors.segment(weights.cpu().contiguous()), 0, weightsOut, 0, N * 4);
            if (metrics != null) MemorySegment.copy(Tensors.segment(metrics.cpu().contiguous()), 0, metricsOut, 0, N * 12);
            return new Result(loss, dX, dW, selected, sequences);
        }
    }

    /**
     * Whether libtorch's {@code addmm} with a float32 {@code out_dtype} accepts 16-bit inputs, per device kind
     * ([0] CPU, [1] CUDA; null = not tried). The CPU build of libtorch 2.10 has no such kernel.
     */
    private static final Boolean[] MIXED_ADDMM = new Boolean[2];

    /**
     * dW (f32) += G^T xs for 16-bit G and xs: through {@code addmm(out_dtype = float32)} (f32 accumulation, no
     * [V, H] temporary) where libtorch supports it, else one 16-bit product per chunk (rounded once, as the
     * unfused path's single product is) added into the f32 accumulator.
     */
    private static void accumulateHalf(Tensor dW, Tensor g, Tensor xs) {
        int k = g.is_cuda() ? 1 : 0;
        if (!Boolean.FALSE.equals(MIXED_ADDMM[k])) {
            try {
                torch.addmm_out(dW, dW, g.t(), xs, ScalarType.Float);
                MIXED_ADDMM[k] = Boolean.TRUE;
                return;
            } catch (RuntimeException e) {
                if (Boolean.TRUE.equals(MIXED_ADDMM[k])) throw e;
                MIXED_ADDMM[k] = Boolean.FALSE; // no such kernel here: fall back from now on
            }
        }
        dW.add_(torch.mm(g.t(), xs));
    }

    private void rowKernel(boolean cuda, long stream, long r0, long c, long C, long T, long V, DType dt, Tensor zs, Tensor zd, Tensor z2,
                           Tensor mask, Tensor tokenLoss, Tensor weights, Tensor metrics) {
        FusedDistillLoss.Batch batch = batchFor(cuda, c, C, V);
        try {
            batch.student(seg(zs), dt, c * V, V).dpo(seg(zd), dtypeOf("dpo", zd), c * zd.stride(0), zd.stride(0));
            if (z2 != null) batch.second(seg(z2), dtypeOf("second", z2), c * z2.stride(0), z2.stride(0));
            batch.gradInPlace().sequenceDivisor(1).threads(cuda ? 0 : TorchRuntime.threads());
            if (mask != null) batch.mask(seg(mask.narrow(0, r0, c)), c, 1);
            else batch.mask(null);
            batch.tokenLosses(seg(tokenLoss.narrow(0, r0, c)));
            batch.weights(weights == null ? null : seg(weights.narrow(0, r0, c)));
            batch.metrics(metrics == null ? null : seg(metrics.narrow(0, r0, c)));
            if (cuda) {
                batch.runOnDevice(stream);
                batch.synchronize(stream);
            } else {
                batch.run();
            }
        } catch (NonFiniteLogitsException e) {
            long row = r0 + e.position(); // the chunk is one sequence of c rows: position = row within the chunk
            throw new NonFiniteLogitsException("fused-linear chunk rows [" + r0 + ", " + (r0 + c) + "): " + e.getMessage()
                    + " = batch " + row / T + ", position " + row % T + " of the whole input", row / T, row % T, e.column());
        } finally {
            if (c != fullBatchRows || cuda) batch.close();
        }
    }

    /** The cached batch for full chunks of C rows on the host; a fresh one otherwise (the tail, CUDA). */
    private FusedDistillLoss.Batch batchFor(boolean cuda, long c, long C, long V) {
        if (cuda) {
            if (cudaRowLoss == null) cudaRowLoss = FusedDistillLoss.create(config.withLengthNorm(false), Backend.CUDA);
            return cudaRowLoss.newBatch(1, c, V);
        }
        if (fullBatch == null || fullBatchVocab != V || fullBatchRows != C) {
            if (fullBatch != null) fullBatch.close();
            fullBatch = rowLoss.newBatch(1, C, V);
            fullBatchRows = C;
            fullBatchVocab = V;
        }
        return c == fullBatchRows ? fullBatch : rowLoss.newBatch(1, c, V);
    }

    private static Tensor teacherChunk(Teacher t, Tensor ws, long r0, long c) {
        if (t.logits() != null) return t.logits().narrow(0, r0, c);
        Tensor z = ws.narrow(0, 0, c);
        torch.mm_out(z, t.hidden().narrow(0, r0, c), t.head().t());
        return z;
    }

    /** Flattens a teacher to [N, H'] + head or [N, V] logits, contiguous. */
    private static Teacher prepareTeacher(Teacher t, long N) {
        if (t.logits() != null) return Teacher.logits(t.logits().contiguous().view(N, t.logits().size(2)));
        return Teacher.hidden(t.hidden().contiguous().view(N, t.hidden().size(2)), t.head().contiguous());
    }

    private void ensureWorkspace(long C, long V, Tensor hidden, Teacher[] teachers) {
        String key = hidden.scalar_type().value + "/" + (teachers[0].head() == null ? -1 : teachers[0].head().scalar_type().value) + "/"
                + (teachers[1] == null || teachers[1].head() == null ? -1 : teachers[1].head().scalar_type().value) + "/"
                + hidden.device().type().value + ":" + hidden.device().index();
        if (C <= wsRows && V == wsVocab && key.equals(wsKey)) return; // a larger workspace serves smaller chunks
        releaseWorkspace();
        try (PointerScope scope = new PointerScope()) {
            wsStudent = retained(torch.empty(new long[] {C, V}, like(hidden, hidden.scalar_type()), new MemoryFormatOptional()));
            if (teachers[0].head() != null)
                wsDpo = retained(torch.empty(new long[] {C, V}, like(hidden, teachers[0].head().scalar_type()), new MemoryFormatOptional()));
            if (teachers[1] != null && teachers[1].head() != null)
                wsSecond = retained(torch.empty(new long[] {C, V}, like(hidden, teachers[1].head().scalar_type()), new MemoryFormatOptional()));
        }
        wsRows = C;
        wsVocab = V;
        wsKey = key;
    }

    private static Tensor retained(Tensor t) {
        t.retainReference(); // survives the allocating scope; released in releaseWorkspace()
        return t;
    }

    private void releaseWorkspace() {
        for (Tensor t : new Tensor[] {wsStudent, wsDpo, wsSecond}) if (t != null) t.releaseReference();
        wsStudent = wsDpo = wsSecond = null;
        wsRows = wsVocab = 0;
        wsKey = "";
        if (fullBatch != null) fullBatch.close();
        fullBatch = null;
        fullBatchRows = 0;
    }

    /** Frees the cached workspace and the native argument blocks. */
    @Override
    public void close() {
        releaseWorkspace();
    }

    // ------------------------------------------------------------------ helpers

    private static void checkTeacher(String name, Teacher t, long B, long T, long V, boolean cuda) {
        if (t.logits() != null) {
            Tensor z = t.logits();
            if (z.dim() != 3 || z.size(0) != B || z.size(1) != T || z.size(2) != V)
                throw new IllegalArgumentException(name + " logits must be [" + B + ", " + T + ", " + V + "], got " + java.util.Arrays.toString(Tensors.shape(z)));
            if (z.is_cuda() != cuda) throw new IllegalArgumentException(name + " logits are on another device than the student");
            dtypeOf(name + " logits", z);
            return;
        }
        Tensor h = t.hidden(), w = t.head();
        if (h.dim() != 3 || h.size(0) != B || h.size(1) != T)
            throw new IllegalArgumentException(name + " hidden must be [" + B + ", " + T + ", H], got " + java.util.Arrays.toString(Tensors.shape(h)));
        if (w.dim() != 2 || w.size(0) != V || w.size(1) != h.size(2))
            throw new IllegalArgumentException(name + " head must be [" + V + ", " + h.size(2) + "], got " + java.util.Arrays.toString(Tensors.shape(w)));
        if (h.scalar_type().value != w.scalar_type().value) throw new IllegalArgumentException(name + " hidden and head dtypes differ");
        if (h.is_cuda() != cuda || w.is_cuda() != cuda) throw new IllegalArgumentException(name + " tensors are on another device than the student");
        dtypeOf(name + " hidden", h);
    }

    private static DType dtypeOf(String what, Tensor t) {
        int v = t.scalar_type().value;
        if (v == ScalarType.Float.value) return DType.F32;
        if (v == ScalarType.BFloat16.value) return DType.BF16;
        if (v == ScalarType.Half.value) return DType.F16;
        throw new IllegalArgumentException(what + " must be float32, bfloat16 or float16, got " + t.scalar_type());
    }

    private static TensorOptions like(Tensor t, ScalarType dtype) {
        return new TensorOptions(dtype).device(new org.bytedeco.pytorch.DeviceOptional(t.device()));
    }

    private static Tensor toDevice(Tensor host, Tensor like) {
        return like.is_cuda() ? host.to(like.device(), host.scalar_type(), false, false, new MemoryFormatOptional()) : host;
    }

    /** A segment over a contiguous tensor's memory (host or device address). */
    private static MemorySegment seg(Tensor t) {
        if (!t.is_contiguous()) throw new IllegalStateException("internal: a non-contiguous tensor reached the row kernel");
        return MemorySegment.ofAddress(t.data_ptr().address()).reinterpret(t.nbytes());
    }

    /**
     * libtorch's current CUDA stream, reached reflectively: {@code CUDAStream.stream()} returns a type of the
     * org.bytedeco cuda presets, which a CPU build does not have on its class path. Loaded only on the CUDA path.
     */
    public static final class CudaStreams {
        private CudaStreams() {}

        public static long current() {
            try {
                Class<?> tc = Class.forName("org.bytedeco.pytorch.global.torch_cuda");
                Object stream = MethodHandles.publicLookup().findStatic(tc, "getCurrentCUDAStream",
                        MethodType.methodType(Class.forName("org.bytedeco.pytorch.cuda.CUDAStream"))).invoke();
                Class<?> cuStream = Class.forName("org.bytedeco.cuda.cudart.CUstream_st");
                Object raw = MethodHandles.publicLookup().findVirtual(stream.getClass(), "stream", MethodType.methodType(cuStream)).invoke(stream);
                return ((Pointer) raw).address();
            } catch (Throwable e) {
                throw new IllegalStateException("CUDA tensors need libtorch's CUDA build and the org.bytedeco cuda presets on the class path: " + e, e);
            }
        }

        static void synchronize(long stream) {
            ai.aligndistil.kernel.NativeCuda.streamSynchronize(stream);
        }
    }
}
