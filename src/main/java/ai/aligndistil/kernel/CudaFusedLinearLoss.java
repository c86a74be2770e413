package ai.aligndistil.kernel;

import ai.aligndistil.io.DType;
import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;
import java.util.Objects;

/**
 * The chunked fused-linear AlignDistil loss on the GPU ({@code ad_fll_cuda}, src/main/cuda/fused_linear_loss.cu):
 * from the final hidden states and LM heads of the student and the two frozen teachers (or a teacher's own
 * logits), the loss, {@code dXs = G Ws} and {@code dWs += G^T Xs}, without ever building the [N, V] logits or
 * gradient (extra device memory O(C x V), C tokens per chunk). Compile-checked only: the native code has not run
 * on a GPU yet. The maths is {@link FusedLinearLossReference}; the C contract is native/include/aligndistil.h.
 *
 * <h2>Use</h2>
 * <pre>{@code
 * CudaFusedLinearLoss fll = CudaFusedLinearLoss.create(LossConfig.defaults());
 * try (CudaFusedLinearLoss.Call call = fll.newCall(B, T, H, V, DType.BF16)) {     // one per thread, reused
 *     call.student(xs, ws).dpo(xd, wd).second(x2, w2).mask(mask)              // device segments
 *         .gradHidden(dxs).gradHead(dwsF32).tokenLosses(tl);
 *     call.launch(stream);                                                    // validates, then runs asynchronously
 *     double loss = call.synchronize(stream);
 * }
 * }</pre>
 * Every segment holds a DEVICE address ({@code MemorySegment.ofAddress(ptr).reinterpret(bytes)}); Java never
 * dereferences it. Hidden states [N, H] and heads [V, H] are contiguous row-major in the call's dtype, N = B*T;
 * dXs [N, H] in that dtype (every row written); dWs is an f32 [V, H] accumulator (+=). Teacher logits [N, V] may
 * have any dtype and a row stride >= V. The mask is u8 [B, T] with strides, or none.
 *
 * <p>Everything is validated in Java before native code runs (bad input: {@link IllegalArgumentException}, nothing
 * written). After the first launch a call allocates nothing unless a larger workspace is needed. A non-finite or
 * empty row throws {@link NonFiniteLogitsException} from {@link Call#synchronize(long)}; then the loss, dXs, weight
 * and token_loss are zero and dWs holds the contributions of the chunks before the failing one (discard it).
 * No cuBLAS on the machine: {@link UnsupportedOperationException} from {@link Call#launch(long)}.
 *
 * <p>Knob: {@code -Daligndistil.fusedLinear.chunk=C} tokens per chunk (default 0 = auto: the largest multiple of 256 whose
 * chunk buffers fit AD_FLL_AUTO_WORKSPACE_BYTES = 1 GiB: 1024 tokens for a bf16 Qwen2.5-1.5B head); {@link Call#chunkTokens(long)} overrides it per call.
 * cuBLAS is found as libcublas.so.13, .12, or {@code AD_CUBLAS_LIBRARY} (environment).
 */
public final class CudaFusedLinearLoss {
    /** System property: tokens per chunk, 0 = auto. */
    public static final String CHUNK_PROPERTY = "aligndistil.fusedLinear.chunk";

    private final LossConfig config;

    private CudaFusedLinearLoss(LossConfig config) { this.config = Objects.requireNonNull(config, "config"); }

    public static CudaFusedLinearLoss create(LossConfig config) { return new CudaFusedLinearLoss(config); }

    public LossConfig config() { return config; }

    /** The CUDA library with ad_fll_cuda loaded and a GPU answers (cuBLAS is only looked for at the first launch). */
    public static boolean available() { return NativeCuda.available() && Native.FLL != null; }

    /** Why {@link #available()} is false, or null. */
    public static String problem() {
        if (!NativeCuda.available()) return NativeCuda.problem();
        return Native.FLL == null ? Native.PROBLEM : null;
    }

    /** A reusable call frame for N = batch * seq tokens, hidden size H, vocabulary V, hidden/head dtype. */
    public Call newCall(long batch, long seq, long hidden, long vocab, DType dtype) {
        return new Call(this, batch, seq, hidden, vocab, dtype);
    }

    // ------------------------------------------------------------------------------------------ native

    /** Byte offsets of {@code ad_fll_problem} (all fields 8 bytes; fused_linear_loss.cu static_asserts the size). */
    static final class Layout {
        private Layout() {}
        static final long BATCH = 0, SEQ = 8, HIDDEN = 16, VOCAB = 24, DTYPE = 32;
        static final long STUDENT_HIDDEN = 40, STUDENT_HEAD = 48;
        static final long DPO_HIDDEN = 56, DPO_HEAD = 64, DPO_LOGITS = 72, DPO_LOGITS_DTYPE = 80, DPO_LOGITS_STRIDE = 88;
        static final long SECOND_HIDDEN = 96, SECOND_HEAD = 104, SECOND_LOGITS = 112, SECOND_LOGITS_DTYPE = 120, SECOND_LOGITS_STRIDE = 128;
        static final long MASK = 136, MASK_SB = 144, MASK_ST = 152;
        static final long D_STUDENT_HIDDEN = 160, D_STUDENT_HEAD = 168, WEIGHT = 176, TOKEN_LOSS = 184;
        static final long VARIANT = 192, LENGTH_NORM = 200;
        static final long BETA = 208, BETA2 = 216, EPSILON = 224, TEMPERATURE = 232, STUDENT_TEMPERATURE = 240, SEQ_DIVISOR = 248;
        static final long CHUNK_TOKENS = 256;
        static final long SIZE = 264;
    }

    private static final class Native {
        static final MethodHandle FLL, WS, CHUNK;
        static final String PROBLEM;

        static {
            MethodHandle fll = null, ws = null, chunk = null;
            String problem = null;
            NativeLibraries.Loaded lib = NativeLibraries.load("aligndistil_cuda");
            if (!lib.ok()) {
                problem = lib.problem();
            } else {
                try {
                    Linker l = Linker.nativeLinker();
                    SymbolLookup s = lib.lookup();
                    // device pointers and the stream travel as int64, so a launch creates no MemorySegment
                    fll = l.downcallHandle(find(s, "ad_fll_cuda"), FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.ADDRESS,
                            ValueLayout.JAVA_LONG, ValueLayout.JAVA_LONG, ValueLayout.JAVA_LONG, ValueLayout.JAVA_LONG, ValueLayout.JAVA_LONG));
                    ws = l.downcallHandle(find(s, "ad_fll_cuda_workspace_bytes"), FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.ADDRESS, ValueLayout.ADDRESS));
                    chunk = l.downcallHandle(find(s, "ad_fll_cuda_chunk_tokens"), FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.ADDRESS, ValueLayout.ADDRESS));
                } catch (RuntimeException e) {
                    problem = "ad_fll_cuda binding failed: " + e.getMessage();
                    fll = null;
                }
            }
            FLL = fll; WS = ws; CHUNK = chunk; PROBLEM = problem;
        }

        private static MemorySegment find(SymbolLookup s, String name) {
            return s.find(name).orElseThrow(() -> new IllegalStateException("missing symbol " + name + " (library older than this class?)"));
        }
    }

    // ------------------------------------------------------------------------------------------ call

    /** One call's arguments, native argument block and device scalars. Not thread-safe: one per thread. */
    public static final class Call implements AutoCloseable {
        private final CudaFusedLinearLoss op;
        private final long B, T, N, H, V;
        private final DType dtype;
        private final Arena arena = Arena.ofShared();
        private final MemorySegment problem = arena.allocate(Layout.SIZE, 8);
        private final MemorySegment out = arena.allocate(ValueLayout.JAVA_LONG);
        private final MemorySegment hostStatus = arena.allocate(ValueLayout.JAVA_LONG, 4);
        private final MemorySegment hostLoss = arena.allocate(ValueLayout.JAVA_DOUBLE);
        private MemorySegment xs, ws, xd, wd, zd, x2, w2, z2, mask, dxs, dws, weight, tokenLoss;
        private DType zdType, z2Type;
        private long zdStride, z2Stride, msb, mst;
        private double seqDivisor;
        private long chunk = Long.getLong(CHUNK_PROPERTY, 0L);
        private MemorySegment dLoss, dStatus, workspace;
        private long workspaceBytes;
        private double loss = Double.NaN;
        private long selectedRows;

        Call(CudaFusedLinearLoss op, long batch, long seq, long hidden, long vocab, DType dtype) {
            if (batch < 1 || seq < 1 || hidden < 1 || vocab < 1)
                throw new IllegalArgumentException("batch, seq, hidden and vocab must be >= 1, got [" + batch + ", " + seq + ", " + hidden + ", " + vocab + "]");
            if (hidden > Integer.MAX_VALUE || vocab > Integer.MAX_VALUE - 8)
                throw new IllegalArgumentException("hidden and vocab must fit a cuBLAS int, got " + hidden + ", " + vocab);
            this.dtype = Objects.requireNonNull(dtype, "dtype");
            ProblemStruct.code("hidden", dtype);
            try {
                long n = Math.multiplyExact(batch, seq);
                Math.multiplyExact(Math.multiplyExact(n, hidden), 4L);
                Math.multiplyExact(Math.multiplyExact(vocab, hidden), 4L);
                Math.multiplyExact(Math.multiplyExact(n, vocab), 4L);
                this.N = n;
            } catch (ArithmeticException e) {
                throw new IllegalArgumentException("[" + batch + " x " + seq + ", " + hidden + ", " + vocab + "] overflows 64-bit sizes");
            }
            if (chunk < 0) throw new IllegalArgumentException("-D" + CHUNK_PROPERTY + " must be >= 0, got " + chunk);
            this.op = op;
            this.B = batch; this.T = seq; this.H = hidden; this.V = vocab;
            this.mst = 1; this.msb = seq;
        }

        public long tokens() { return N; }

        /** Student final hidden states Xs [N, H] and LM head Ws [V, H] (device). */
        public Call student(MemorySegment hidden, MemorySegment head) { xs = hidden; ws = head; return this; }

        /** DPO teacher as hidden states [N, H] and head [V, H] (device); clears DPO logits. */
        public Call dpo(MemorySegment hidden, MemorySegment head) { xd = hidden; wd = head; zd = null; return this; }

        /** DPO teacher as logits [N, V], rows {@code rowStride} elements apart (device); clears DPO hidden/head. */
        public Call dpoLogits(MemorySegment logits, DType type, long rowStride) {
            if (type != null) ProblemStruct.code("dpo logits", type);
            zd = logits; zdType = type; zdStride = rowStride; xd = null; wd = null; return this;
        }

        /** Second teacher (reverse DPO or reference) as hidden states and head; unused by gkd. */
        public Call second(MemorySegment hidden, MemorySegment head) { x2 = hidden; w2 = head; z2 = null; return this; }

        public Call secondLogits(MemorySegment logits, DType type, long rowStride) {
            if (type != null) ProblemStruct.code("second logits", type);
            z2 = logits; z2Type = type; z2Stride = rowStride; x2 = null; w2 = null; return this;
        }

        public Call mask(MemorySegment seg) { return mask(seg, T, 1); }

        public Call mask(MemorySegment seg, long strideB, long strideT) { mask = seg; msb = strideB; mst = strideT; return this; }

        /** dXs [N, H] in the call's dtype (written). */
        public Call gradHidden(MemorySegment seg) { dxs = seg; return this; }

        /** dWs [V, H] f32 (accumulated: += G^T Xs). */
        public Call gradHead(MemorySegment seg) { dws = seg; return this; }

        public Call weights(MemorySegment seg) { weight = seg; return this; }

        public Call tokenLosses(MemorySegment seg) { tokenLoss = seg; return this; }

        /** N of the loss; <= 0: the number of sequences with a selected row (the default). */
        public Call sequenceDivisor(double n) {
            if (!Double.isFinite(n)) throw new IllegalArgumentException("sequence divisor must be finite, got " + n);
            seqDivisor = n;
            return this;
        }

        /** Tokens per chunk; 0 = auto. */
        public Call chunkTokens(long c) {
            if (c < 0) throw new IllegalArgumentException("chunk tokens must be >= 0, got " + c);
            chunk = c;
            return this;
        }

        /** The loss of the last {@link #synchronize(long)}. */
        public double loss() { return loss; }

        public long selectedRows() { return selectedRows; }

        /** Validates and runs asynchronously on {@code stream} (a cudaStream_t, 0 = legacy default stream). */
        public void launch(long stream) {
            validate();
            if (!available()) throw new IllegalStateException("CudaFusedLinearLoss needs the CUDA library and a GPU: " + problem());
            fillProblem();
            long need = nativeQuery(Native.WS, "ad_fll_cuda_workspace_bytes");
            if (dLoss == null) {
                dLoss = NativeCuda.malloc(8);
                dStatus = NativeCuda.malloc(32);
            }
            if (workspace == null || workspaceBytes < need) {
                if (workspace != null) NativeCuda.free(workspace);
                workspace = null;
                workspace = NativeCuda.malloc(Math.max(need, 256));
                workspaceBytes = Math.max(need, 256);
            }
            int rc;
            try {
                rc = (int) Native.FLL.invokeExact(problem, workspace.address(), workspaceBytes, dLoss.address(), dStatus.address(), stream);
            } catch (Throwable t) {
                throw NativeCpu.rethrow(t);
            }
            if (rc != ProblemStruct.AD_OK) throw launchError(rc);
        }

        /** Waits for {@code stream}, throws if a row was bad, returns the loss. */
        public double synchronize(long stream) {
            if (dStatus == null) throw new IllegalStateException("nothing was launched on this call");
            NativeCuda.streamSynchronize(stream);
            NativeCuda.copyToHost(hostStatus, dStatus, 32, stream);
            NativeCuda.copyToHost(hostLoss, dLoss, 8, stream);
            long code = hostStatus.getAtIndex(ValueLayout.JAVA_LONG, 0);
            selectedRows = hostStatus.getAtIndex(ValueLayout.JAVA_LONG, 3);
            if (code != ProblemStruct.AD_OK) {
                loss = 0;
                long token = hostStatus.getAtIndex(ValueLayout.JAVA_LONG, 1), column = hostStatus.getAtIndex(ValueLayout.JAVA_LONG, 2);
                long b = token >= 0 ? token / T : -1, t = token >= 0 ? token % T : -1;
                if (code == ProblemStruct.AD_ERR_NONFINITE || code == ProblemStruct.AD_ERR_EMPTY_ROW)
                    throw new NonFiniteLogitsException((code == ProblemStruct.AD_ERR_EMPTY_ROW ? "no finite logit" : "non-finite logit")
                            + " in selected row (b=" + b + ", t=" + t + ")" + (column >= 0 ? " at column " + column : "")
                            + " (logits of the hidden states and heads, or the given teacher logits); dWs holds a partial sum, discard it", b, t, column);
                throw new NativeCuda.CudaException("ad_fll_cuda reported " + ProblemStruct.codeName(code));
            }
            loss = hostLoss.get(ValueLayout.JAVA_DOUBLE, 0);
            return loss;
        }

        /** Device memory of one launch beyond the caller's tensors (validates first; needs the library). */
        public long workspaceBytes() {
            validate();
            if (Native.WS == null) throw new IllegalStateException("CudaFusedLinearLoss needs the CUDA library: " + problem());
            fillProblem();
            return nativeQuery(Native.WS, "ad_fll_cuda_workspace_bytes");
        }

        /** The chunk size the native code will use (the auto choice resolved). */
        public long resolvedChunkTokens() {
            validate();
            if (Native.CHUNK == null) throw new IllegalStateException("CudaFusedLinearLoss needs the CUDA library: " + problem());
            fillProblem();
            return nativeQuery(Native.CHUNK, "ad_fll_cuda_chunk_tokens");
        }

        public MemorySegment deviceLoss() { return dLoss; }

        public MemorySegment deviceStatus() { return dStatus; }

        @Override
        public void close() {
            if (workspace != null) NativeCuda.free(workspace);
            if (dLoss != null) NativeCuda.free(dLoss);
            if (dStatus != null) NativeCuda.free(dStatus);
            workspace = dLoss = dStatus = null;
            arena.close();
        }

        private long nativeQuery(MethodHandle h, String what) {
            int rc;
            try {
                rc = (int) h.invokeExact(problem, out);
            } catch (Throwable t) {
                throw NativeCpu.rethrow(t);
            }
            if (rc != ProblemStruct.AD_OK) throw launchError(rc);
            return out.get(ValueLayout.JAVA_LONG, 0);
        }

        private RuntimeException launchError(int rc) {
            String msg = NativeCuda.lastError();
            return switch (rc) {
                case ProblemStruct.AD_ERR_INVALID_ARGUMENT -> new IllegalArgumentException(msg);
                case ProblemStruct.AD_ERR_UNSUPPORTED -> new UnsupportedOperationException(msg);
                default -> new NativeCuda.CudaException(ProblemStruct.codeName(rc) + ": " + msg);
            };
        }

        // -------------------------------------------------------------------------------- validation

        private void validate() {
            final long es = dtype.byteSize;
            final boolean second = op.config.variant().needsSecondTeacher();
            final long nh = N * H * es, vh = V * H * es;
            device("student hidden", xs, nh, es);
            device("student head", ws, vh, es);
            teacher("dpo", xd, wd, zd, zdType, zdStride);
            if (second) teacher(op.config.variant().secondLabel, x2, w2, z2, z2Type, z2Stride);
            device("gradHidden (dXs)", dxs, nh, es);
            device("gradHead (dWs, f32)", dws, V * H * 4, 4);
            long maskBytes = 0;
            if (mask != null) {
                if (msb < 0 || mst < 0) throw new IllegalArgumentException("mask strides must be >= 0, got (" + msb + ", " + mst + ")");
                try {
                    maskBytes = Math.addExact(Math.addExact(Math.multiplyExact(B - 1, msb), Math.multiplyExact(T - 1, mst)), 1);
                } catch (ArithmeticException e) {
                    throw new IllegalArgumentException("mask strides (" + msb + ", " + mst + ") overflow");
                }
                device("mask", mask, maskBytes, 1);
            }
            if (weight != null) device("weight", weight, N * 4, 4);
            if (tokenLoss != null) device("token_loss", tokenLoss, N * 4, 4);
            // outputs overlap nothing (no arrays: this runs on every launch and must not allocate)
            outputOverlaps("gradHidden (dXs)", dxs, nh, maskBytes, second);
            outputOverlaps("gradHead (dWs)", dws, V * H * 4, maskBytes, second);
            if (weight != null) outputOverlaps("weight", weight, N * 4, maskBytes, second);
            if (tokenLoss != null) outputOverlaps("token_loss", tokenLoss, N * 4, maskBytes, second);
        }

        private void outputOverlaps(String name, MemorySegment o, long bytes, long maskBytes, boolean second) {
            final long es = dtype.byteSize, nh = N * H * es, vh = V * H * es;
            if (overlaps(o, bytes, xs, nh) || overlaps(o, bytes, ws, vh)) throw new IllegalArgumentException(name + " overlaps the student hidden states or head");
            if (overlaps(o, bytes, xd, nh) || overlaps(o, bytes, wd, vh) || overlaps(o, bytes, zd, logitsBytes(zdType, zdStride)))
                throw new IllegalArgumentException(name + " overlaps the dpo teacher");
            if (second && (overlaps(o, bytes, x2, nh) || overlaps(o, bytes, w2, vh) || overlaps(o, bytes, z2, logitsBytes(z2Type, z2Stride))))
                throw new IllegalArgumentException(name + " overlaps the second teacher");
            if (overlaps(o, bytes, mask, maskBytes)) throw new IllegalArgumentException(name + " overlaps the mask");
            if (o != dxs && overlaps(o, bytes, dxs, nh)) throw new IllegalArgumentException(name + " overlaps gradHidden (dXs)");
            if (o != dws && overlaps(o, bytes, dws, V * H * 4)) throw new IllegalArgumentException(name + " overlaps gradHead (dWs)");
            if (o != weight && overlaps(o, bytes, weight, N * 4)) throw new IllegalArgumentException(name + " overlaps weight");
            if (o != tokenLoss && overlaps(o, bytes, tokenLoss, N * 4)) throw new IllegalArgumentException(name + " overlaps token_loss");
        }

        private long logitsBytes(DType t, long stride) {
            return t == null ? 0 : ((N - 1) * stride + V) * t.byteSize;
        }

        private void teacher(String name, MemorySegment hidden, MemorySegment head, MemorySegment logits, DType t, long stride) {
            if (logits == null) {
                if (hidden == null || head == null)
                    throw new IllegalArgumentException(name + " teacher is not set: give hidden states + head, or logits");
                device(name, " hidden", hidden, N * H * dtype.byteSize, dtype.byteSize);
                device(name, " head", head, V * H * dtype.byteSize, dtype.byteSize);
                return;
            }
            if (t == null) throw new IllegalArgumentException(name + " logits dtype is not set");
            if (stride < V) throw new IllegalArgumentException(name + " logits row stride " + stride + " < vocab " + V);
            long need;
            try {
                need = Math.multiplyExact(Math.addExact(Math.multiplyExact(N - 1, stride), V), (long) t.byteSize);
            } catch (ArithmeticException e) {
                throw new IllegalArgumentException(name + " logits row stride " + stride + " overflows");
            }
            device(name, " logits", logits, need, t.byteSize);
        }

        private static void device(String what, MemorySegment seg, long need, long align) { device(what, "", seg, need, align); }

        /** Checks a device segment; the name is {@code what + suffix}, joined only for a message (no allocation otherwise). */
        private static void device(String what, String suffix, MemorySegment seg, long need, long align) {
            if (seg == null) throw new IllegalArgumentException(what + suffix + " is not set");
            if (!seg.isNative()) throw new IllegalArgumentException(what + suffix + " is a Java heap segment; it must hold a device address (MemorySegment.ofAddress(ptr).reinterpret(bytes))");
            if (!seg.scope().isAlive()) throw new IllegalArgumentException(what + suffix + " segment is closed");
            if (seg.address() == 0) throw new IllegalArgumentException(what + suffix + " is a NULL address");
            if (seg.byteSize() < need) throw new IllegalArgumentException(what + suffix + " segment has " + seg.byteSize() + " bytes, needs " + need);
            if (seg.address() % align != 0) throw new IllegalArgumentException(what + suffix + " address is not aligned to " + align + " bytes");
            if (seg.isReadOnly() && (what.startsWith("grad") || what.equals("weight") || what.equals("token_loss")))
                throw new IllegalArgumentException(what + suffix + " segment is read-only");
        }

        private static boolean overlaps(MemorySegment a, long aBytes, MemorySegment b, long bBytes) {
            if (a == null || b == null || aBytes == 0 || bBytes == 0) return false;
            long a0 = a.address(), b0 = b.address();
            return a0 < b0 + bBytes && b0 < a0 + aBytes;
        }

        // -------------------------------------------------------------------------------- argument block

        private void fillProblem() {
            final LossConfig c = op.config;
            final boolean second = c.variant().needsSecondTeacher();
            MemorySegment p = problem;
            p.set(ValueLayout.JAVA_LONG, Layout.BATCH, B);
            p.set(ValueLayout.JAVA_LONG, Layout.SEQ, T);
            p.set(ValueLayout.JAVA_LONG, Layout.HIDDEN, H);
            p.set(ValueLayout.JAVA_LONG, Layout.VOCAB, V);
            p.set(ValueLayout.JAVA_LONG, Layout.DTYPE, ProblemStruct.code("hidden", dtype));
            p.set(ValueLayout.JAVA_LONG, Layout.STUDENT_HIDDEN, addr(xs));
            p.set(ValueLayout.JAVA_LONG, Layout.STUDENT_HEAD, addr(ws));
            p.set(ValueLayout.JAVA_LONG, Layout.DPO_HIDDEN, zd == null ? addr(xd) : 0L);
            p.set(ValueLayout.JAVA_LONG, Layout.DPO_HEAD, zd == null ? addr(wd) : 0L);
            p.set(ValueLayout.JAVA_LONG, Layout.DPO_LOGITS, addr(zd));
            p.set(ValueLayout.JAVA_LONG, Layout.DPO_LOGITS_DTYPE, zd == null ? 0 : ProblemStruct.code("dpo logits", zdType));
            p.set(ValueLayout.JAVA_LONG, Layout.DPO_LOGITS_STRIDE, zd == null ? 0 : zdStride);
            p.set(ValueLayout.JAVA_LONG, Layout.SECOND_HIDDEN, second && z2 == null ? addr(x2) : 0L);
            p.set(ValueLayout.JAVA_LONG, Layout.SECOND_HEAD, second && z2 == null ? addr(w2) : 0L);
            p.set(ValueLayout.JAVA_LONG, Layout.SECOND_LOGITS, second ? addr(z2) : 0L);
            p.set(ValueLayout.JAVA_LONG, Layout.SECOND_LOGITS_DTYPE, second && z2 != null ? ProblemStruct.code("second logits", z2Type) : 0);
            p.set(ValueLayout.JAVA_LONG, Layout.SECOND_LOGITS_STRIDE, second && z2 != null ? z2Stride : 0);
            p.set(ValueLayout.JAVA_LONG, Layout.MASK, addr(mask));
            p.set(ValueLayout.JAVA_LONG, Layout.MASK_SB, msb);
            p.set(ValueLayout.JAVA_LONG, Layout.MASK_ST, mst);
            p.set(ValueLayout.JAVA_LONG, Layout.D_STUDENT_HIDDEN, addr(dxs));
            p.set(ValueLayout.JAVA_LONG, Layout.D_STUDENT_HEAD, addr(dws));
            p.set(ValueLayout.JAVA_LONG, Layout.WEIGHT, addr(weight));
            p.set(ValueLayout.JAVA_LONG, Layout.TOKEN_LOSS, addr(tokenLoss));
            p.set(ValueLayout.JAVA_LONG, Layout.VARIANT, c.variant().code);
            p.set(ValueLayout.JAVA_LONG, Layout.LENGTH_NORM, c.lengthNorm() ? 1 : 0);
            p.set(ValueLayout.JAVA_DOUBLE, Layout.BETA, c.beta());
            p.set(ValueLayout.JAVA_DOUBLE, Layout.BETA2, c.beta2());
            p.set(ValueLayout.JAVA_DOUBLE, Layout.EPSILON, c.epsilon());
            p.set(ValueLayout.JAVA_DOUBLE, Layout.TEMPERATURE, c.temperature());
            p.set(ValueLayout.JAVA_DOUBLE, Layout.STUDENT_TEMPERATURE, c.studentTemperature());
            p.set(ValueLayout.JAVA_DOUBLE, Layout.SEQ_DIVISOR, seqDivisor);
            p.set(ValueLayout.JAVA_LONG, Layout.CHUNK_TOKENS, chunk);
        }

        private static long addr(MemorySegment s) { return s == null ? 0L : s.address(); }
    }
}
