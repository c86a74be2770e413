package ai.aligndistil.kernel;

import ai.aligndistil.io.DType;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.condition.EnabledIf;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.function.Consumer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * {@link CudaFusedLinearLoss}: Java-side validation (runs everywhere: fake device addresses that native code would
 * choke on are rejected before it runs), the chunk-normalisation identity the CUDA code relies on (checked here
 * on the CPU row kernel), and the GPU result against {@link FusedLinearLossReference} (tagged {@code gpu},
 * skipped without a GPU).
 *
 * <p>Inputs are on the grid {-2..2}/4, so every logit is a multiple of 1/16 with |z| <= H/4: exact in f32 and
 * bf16, and the reference and the kernels see the same logits. Tolerances (where they come from):
 * <ul>
 *   <li>loss, weight, token_loss: |x - ref| <= tol max(1, |ref|), tol = 1e-5 (f32), 1e-4 (bf16): the row kernel's
 *       contract ({@link Compare}).</li>
 *   <li>The row kernel's gradient row G'_n meets ||G'_n - ref_n||_2 <= gtol ||ref_n||_2 (gtol = 1e-4 f32,
 *       1e-3 + 2^-8 bf16, {@link Compare.Tol#forCase}); by Cauchy-Schwarz dXs[n,h] is then within
 *       gtol ||G_n|| ||W_:h|| + u |ref| and dWs[v,h] within sum_n (gtol ||G_n|| + 2u |G_nv|) |X_nh| + N 2^-24
 *       (|dW0| + sum_n |G_nv X_nh|), u = the unit roundoff of the dtype (0 in the double emulation), the last
 *       term the f32 accumulation of dWs.</li>
 * </ul>
 */
class CudaFusedLinearLossTest {

    // ---------------------------------------------------------------------------------- validation (no GPU)

    static final long B = 2, T = 3, N = B * T, H = 8, V = 16;

    /** Fake, never-dereferenced device segments, far apart. */
    private static MemorySegment dev(int slot, long bytes) {
        return MemorySegment.ofAddress((1L << 40) + slot * (1L << 33)).reinterpret(bytes);
    }

    private static CudaFusedLinearLoss.Call validCall(CudaFusedLinearLoss fll) {
        long nh = N * H * 2, vh = V * H * 2;
        return fll.newCall(B, T, H, V, DType.BF16)
                .student(dev(0, nh), dev(1, vh)).dpo(dev(2, nh), dev(3, vh)).second(dev(4, nh), dev(5, vh))
                .mask(dev(6, N)).gradHidden(dev(7, nh)).gradHead(dev(8, V * H * 4))
                .weights(dev(9, N * 4)).tokenLosses(dev(10, N * 4));
    }

    private static void expect(String fragment, Consumer<CudaFusedLinearLoss.Call> breakIt) {
        try (CudaFusedLinearLoss.Call c = validCall(CudaFusedLinearLoss.create(LossConfig.defaults()))) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> {
                breakIt.accept(c);
                c.launch(0L);
            });
            assertTrue(e.getMessage().contains(fragment), "message '" + e.getMessage() + "' should mention '" + fragment + "'");
        }
    }

    @Test
    void rejectsBadArgumentsBeforeNativeCode() {
        expect("student hidden is not set", c -> c.student(null, dev(1, V * H * 2)));
        expect("student head segment has", c -> c.student(dev(0, N * H * 2), dev(1, V * H * 2 - 2)));
        expect("not aligned", c -> c.student(MemorySegment.ofAddress((1L << 40) + 1).reinterpret(N * H * 2), dev(1, V * H * 2)));
        expect("Java heap", c -> c.gradHidden(MemorySegment.ofArray(new byte[(int) (N * H * 2)])));
        expect("NULL address", c -> c.gradHidden(MemorySegment.ofAddress(0).reinterpret(N * H * 2)));
        expect("gradHead (dWs, f32) segment has", c -> c.gradHead(dev(8, V * H * 2)));
        expect("dpo teacher is not set", c -> c.dpo(dev(2, N * H * 2), null));
        expect("logits row stride 15 < vocab 16", c -> c.dpoLogits(dev(11, N * 16 * 4), DType.F32, 15));
        expect("dpo logits segment has", c -> c.dpoLogits(dev(11, N * 16 * 4 - 4), DType.F32, 16));
        expect("logits dtype is not set", c -> c.secondLogits(dev(11, N * 16 * 4), null, 16));
        expect("mask segment has", c -> c.mask(dev(6, N - 1)));
        expect("mask strides must be >= 0", c -> c.mask(dev(6, N), -1, 1));
        expect("weight segment has", c -> c.weights(dev(9, N * 4 - 4)));
        expect("gradHidden (dXs) overlaps the student", c -> c.gradHidden(dev(0, N * H * 2)));
        expect("weight overlaps token_loss", c -> c.tokenLosses(dev(9, N * 4)));
        expect("gradHead (dWs) overlaps the mask", c -> c.mask(MemorySegment.ofAddress(dev(8, 1).address() + 64).reinterpret(N)));
        assertThrows(IllegalArgumentException.class, () -> CudaFusedLinearLoss.create(LossConfig.defaults()).newCall(0, 1, 1, 1, DType.F32));
        assertThrows(IllegalArgumentException.class, () -> CudaFusedLinearLoss.create(LossConfig.defaults()).newCall(1, 1, 1L << 31, 1, DType.F32));
        assertThrows(IllegalArgumentException.class, () -> CudaFusedLinearLoss.create(LossConfig.defaults()).newCall(1L << 31, 1L << 31, 64, 64, DType.F32));
        try (CudaFusedLinearLoss.Call c = validCall(CudaFusedLinearLoss.create(LossConfig.defaults()))) {
            assertThrows(IllegalArgumentException.class, () -> c.chunkTokens(-1));
            assertThrows(IllegalArgumentException.class, () -> c.sequenceDivisor(Double.NaN));
        }
    }

    @Test
    void gkdNeedsNoSecondTeacherAndValidCallsReachTheBackendCheck() {
        try (CudaFusedLinearLoss.Call c = validCall(CudaFusedLinearLoss.create(LossConfig.defaults(Variant.GKD)))) {
            c.second(null, null); // unused by gkd
            if (!CudaFusedLinearLoss.available()) {
                IllegalStateException e = assertThrows(IllegalStateException.class, () -> c.launch(0L));
                assertTrue(e.getMessage().contains("CUDA"), e.getMessage());
            }
        }
        try (CudaFusedLinearLoss.Call c = validCall(CudaFusedLinearLoss.create(LossConfig.defaults()))) {
            c.second(null, null);
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> c.launch(0L));
            assertTrue(e.getMessage().contains("teacher is not set"), e.getMessage());
        }
    }

    /** The native library's own view of the struct agrees with Java's (needs only the library, not a GPU). */
    @Test
    void nativeSizesAgreeWhenTheLibraryIsBuilt() {
        if (!NativeCuda.libraryLoaded()) return; // no CUDA library in this build: nothing to compare
        try (CudaFusedLinearLoss.Call c = validCall(CudaFusedLinearLoss.create(LossConfig.defaults()))) {
            assertEquals(N, c.resolvedChunkTokens(), "auto chunk for N = 6 tokens is N");
            c.chunkTokens(4);
            assertEquals(4, c.resolvedChunkTokens());
            long ws = c.workspaceBytes();
            assertTrue(ws > 3 * 4 * ((V + 7) / 8 * 8) * 2, "workspace " + ws + " must hold three [4, V] bf16 chunks");
        }
        try (CudaFusedLinearLoss.Call c = CudaFusedLinearLoss.create(LossConfig.defaults()).newCall(8, 2048, 1536, 151936, DType.BF16)) {
            long nh = 8L * 2048 * 1536 * 2, vh = 151936L * 1536 * 2;
            c.student(dev(0, nh), dev(1, vh)).dpo(dev(2, nh), dev(3, vh)).second(dev(4, nh), dev(5, vh))
                    .gradHidden(dev(6, nh)).gradHead(dev(7, 151936L * 1536 * 4)).chunkTokens(0);
            assertEquals(1024, c.resolvedChunkTokens(), "auto chunk, Qwen2.5-1.5B shapes (aligndistil.h)");
        }
    }

    /**
     * The per-launch Java path (validation, argument block, native workspace query) allocates nothing after
     * warm-up; launch() adds only the downcall. Needs the library (not a GPU): the query is host code.
     */
    @Test
    void perCallPathAllocatesNothing() {
        org.junit.jupiter.api.Assumptions.assumeTrue(NativeCuda.libraryLoaded(), "no CUDA library in this build");
        com.sun.management.ThreadMXBean mx = (com.sun.management.ThreadMXBean) java.lang.management.ManagementFactory.getThreadMXBean();
        try (CudaFusedLinearLoss.Call c = validCall(CudaFusedLinearLoss.create(LossConfig.defaults()))) {
            long sink = 0;
            for (int i = 0; i < 200_000; i++) sink += c.workspaceBytes(); // warm up: JIT-compile the path and the downcall
            long tid = Thread.currentThread().threadId();
            long before = mx.getThreadAllocatedBytes(tid);
            for (int i = 0; i < 10_000; i++) sink += c.workspaceBytes();
            long after = mx.getThreadAllocatedBytes(tid);
            assertTrue(sink > 0);
            // The counter itself may allocate a few bytes; 10,000 calls allocating anything would show thousands.
            assertTrue(after - before < 1024, "10,000 calls allocated " + (after - before) + " bytes");
        }
    }

    // ---------------------------------------------------------------------------------- identity (CPU)

    record Data(int B, int T, int H, int V, double[] xs, double[] ws, double[] xd, double[] wd, double[] x2, double[] w2,
                boolean[] mask, double[] dW0) {
        int n() { return B * T; }
    }

    static Data data(long seed, int B, int T, int H, int V, boolean emptySequence) {
        Random r = new Random(seed);
        int n = B * T;
        boolean[] mask = new boolean[n];
        for (int i = 0; i < n; i++) mask[i] = r.nextDouble() < 0.7;
        mask[0] = true;
        if (emptySequence) for (int t = 0; t < T; t++) mask[T + t] = false;
        double[] dW0 = new double[V * H];
        for (int i = 0; i < dW0.length; i++) dW0[i] = (float) (2 * r.nextDouble() - 1);
        return new Data(B, T, H, V, grid(r, n * H), grid(r, V * H), grid(r, n * H), grid(r, V * H), grid(r, n * H), grid(r, V * H), mask, dW0);
    }

    static double[] grid(Random r, int n) {
        double[] x = new double[n];
        for (int i = 0; i < n; i++) x[i] = (r.nextInt(5) - 2) / 4.0;
        return x;
    }

    /**
     * The CUDA algorithm, emulated with the CPU row kernel: per chunk of C rows, the unnormalised row kernel
     * (lengthNorm off, sequence divisor 1) on [1, C, V], then the rows scaled by s_n = (1/n_b if lengthNorm) / N.
     */
    static FusedLinearLossReference.Result chunkedEmulation(LossConfig cfg, Data d, int C, Backend backend) {
        final int n = d.n(), H = d.H, V = d.V, T = d.T;
        final boolean second = cfg.variant().needsSecondTeacher();
        double[] zs = FusedLinearLossReference.logits(d.xs, d.ws, n, H, V);
        double[] zd = FusedLinearLossReference.logits(d.xd, d.wd, n, H, V);
        double[] z2 = FusedLinearLossReference.logits(d.x2, d.w2, n, H, V);
        long[] nb = new long[d.B];
        long seqs = 0;
        for (int b = 0; b < d.B; b++) {
            for (int t = 0; t < T; t++) if (d.mask[b * T + t]) nb[b]++;
            if (nb[b] > 0) seqs++;
        }
        double[] s = new double[n];
        for (int i = 0; i < n; i++) s[i] = d.mask[i] ? (cfg.lengthNorm() ? 1.0 / nb[i / T] : 1.0) / seqs : 0.0;
        double loss = 0;
        double[] dX = new double[n * H], dW = d.dW0.clone(), g = new double[n * V], weight = new double[n], tl = new double[n];
        FusedDistillLoss op = FusedDistillLoss.create(cfg.withLengthNorm(false), backend);
        try (Arena a = Arena.ofConfined()) {
            for (int c0 = 0; c0 < n; c0 += C) {
                int rows = Math.min(C, n - c0);
                MemorySegment ss = f32(a, zs, c0 * V, rows * V), sd = f32(a, zd, c0 * V, rows * V), s2 = f32(a, z2, c0 * V, rows * V);
                MemorySegment m = a.allocate(rows), gr = a.allocate((long) rows * V * 4, 64), w = a.allocate(rows * 4L), t = a.allocate(rows * 4L);
                for (int i = 0; i < rows; i++) m.set(ValueLayout.JAVA_BYTE, i, (byte) (d.mask[c0 + i] ? 1 : 0));
                try (FusedDistillLoss.Batch b = op.newBatch(1, rows, V)) {
                    b.student(ss, DType.F32).dpo(sd, DType.F32).mask(m).grad(gr, DType.F32).weights(w).tokenLosses(t).sequenceDivisor(1.0);
                    if (second) b.second(s2, DType.F32);
                    b.run();
                }
                for (int i = 0; i < rows; i++) {
                    int row = c0 + i;
                    float tli = t.getAtIndex(ValueLayout.JAVA_FLOAT, i);
                    loss += s[row] * tli; // the token loss passes through f32, as on the GPU
                    tl[row] = tli;
                    weight[row] = w.getAtIndex(ValueLayout.JAVA_FLOAT, i);
                    for (int v = 0; v < V; v++) {
                        double gv = s[row] * gr.getAtIndex(ValueLayout.JAVA_FLOAT, (long) i * V + v);
                        g[row * V + v] = gv;
                        if (gv == 0) continue;
                        for (int h = 0; h < H; h++) {
                            dX[row * H + h] += gv * d.ws[v * H + h];
                            dW[v * H + h] += gv * d.xs[row * H + h];
                        }
                    }
                }
            }
        }
        return new FusedLinearLossReference.Result(loss, dX, dW, g, weight, tl, 0, 0, -1, -1);
    }

    private static MemorySegment f32(Arena a, double[] x, int off, int len) {
        MemorySegment s = a.allocate(len * 4L, 64);
        for (int i = 0; i < len; i++) s.setAtIndex(ValueLayout.JAVA_FLOAT, i, (float) x[off + i]);
        return s;
    }

    @Test
    void chunkNormalisationIdentityMatchesTheUnfusedReference() {
        Backend backend = Backends.available(Backend.CPU) ? Backend.CPU : Backend.REFERENCE;
        List<String> failures = new ArrayList<>();
        long seed = 11;
        for (Variant v : Variant.values())
            for (boolean ln : new boolean[] {false, true})
                for (int C : new int[] {1, 4, 15}) {
                    LossConfig cfg = LossConfig.defaults(v).withLengthNorm(ln).withStudentTemperature(ln ? 1.5 : 1.0).withTemperature(ln ? 2.0 : 1.0);
                    Data d = data(seed++, 3, 5, 24, 37, ln);
                    FusedLinearLossReference.Result ref = FusedLinearLossReference.run(cfg, d.B, d.T, d.H, d.V, d.xs, d.ws, d.xd, d.wd, null,
                            d.x2, d.w2, null, d.mask, 0, d.dW0);
                    assertEquals(0, ref.code(), "reference must succeed on finite inputs");
                    FusedLinearLossReference.Result got = chunkedEmulation(cfg, d, C, backend);
                    compare(v + (ln ? "/len_norm" : "") + "/C=" + C, d, ref, got, 1e-5, 1e-4, 0, failures);
                }
        if (!failures.isEmpty()) fail(failures.size() + " mismatches, worst first:\n" + String.join("\n", failures.subList(0, Math.min(12, failures.size()))));
    }

    @Test
    void referenceReportsNonFiniteRowsLikeTheKernel() {
        Data d = data(5, 2, 3, 8, 11, false);
        double[] zd = FusedLinearLossReference.logits(d.xd, d.wd, d.n(), d.H, d.V);
        zd[4 * d.V + 7] = Double.NEGATIVE_INFINITY; // -inf in one teacher only
        boolean[] mask = d.mask.clone();
        mask[4] = true;
        FusedLinearLossReference.Result r = FusedLinearLossReference.run(LossConfig.defaults(), d.B, d.T, d.H, d.V, d.xs, d.ws, null, null, zd,
                d.x2, d.w2, null, mask, 0, d.dW0);
        assertEquals(ProblemStruct.AD_ERR_NONFINITE, r.code());
        assertEquals(4, r.token());
        assertEquals(7, r.column());
        assertEquals(0.0, r.loss());
        for (double x : r.dXs()) assertEquals(0.0, x);
        for (int i = 0; i < d.dW0.length; i++) assertEquals(d.dW0[i], r.dWs()[i]);
    }

    /** Appends "what[i,j] got vs ref (bound)" for every element out of bounds, worst (largest excess ratio) first. */
    static void compare(String name, Data d, FusedLinearLossReference.Result ref, FusedLinearLossReference.Result got,
                        double tol, double gtol, double u, List<String> failures) {
        final int n = d.n(), H = d.H, V = d.V;
        record Bad(double ratio, String text) {}
        List<Bad> bad = new ArrayList<>();
        if (!(Math.abs(got.loss() - ref.loss()) <= tol * Math.max(1, Math.abs(ref.loss()))))
            bad.add(new Bad(Double.POSITIVE_INFINITY, name + " loss " + got.loss() + " vs " + ref.loss()));
        for (int i = 0; i < n; i++) {
            if (!(Math.abs(got.weight()[i] - ref.weight()[i]) <= tol * Math.max(1, Math.abs(ref.weight()[i]))))
                bad.add(new Bad(1e300, name + " weight[" + i + "] " + got.weight()[i] + " vs " + ref.weight()[i]));
            if (!(Math.abs(got.tokenLoss()[i] - ref.tokenLoss()[i]) <= tol * Math.max(1, Math.abs(ref.tokenLoss()[i]))))
                bad.add(new Bad(1e300, name + " token_loss[" + i + "] " + got.tokenLoss()[i] + " vs " + ref.tokenLoss()[i]));
        }
        double[] gn = new double[n], wn = new double[H];
        for (int i = 0; i < n; i++) { for (int v = 0; v < V; v++) gn[i] += ref.g()[i * V + v] * ref.g()[i * V + v]; gn[i] = Math.sqrt(gn[i]); }
        for (int h = 0; h < H; h++) { for (int v = 0; v < V; v++) wn[h] += d.ws[v * H + h] * d.ws[v * H + h]; wn[h] = Math.sqrt(wn[h]); }
        for (int i = 0; i < n; i++)
            for (int h = 0; h < H; h++) {
                double r = ref.dXs()[i * H + h], x = got.dXs()[i * H + h];
                if (!d.mask[i]) {
                    if (x != 0) bad.add(new Bad(1e300, name + " dXs[" + i + "," + h + "] = " + x + " on a row not selected"));
                    continue;
                }
                double bound = gtol * gn[i] * wn[h] + u * Math.abs(r) + 1e-30;
                if (!(Math.abs(x - r) <= bound)) bad.add(new Bad(Math.abs(x - r) / bound, name + " dXs[" + i + "," + h + "] " + x + " vs " + r + " (bound " + bound + ")"));
            }
        double e32 = Math.scalb(1.0, -24);
        for (int v = 0; v < V; v++)
            for (int h = 0; h < H; h++) {
                double b1 = 0, abs = 0;
                for (int i = 0; i < n; i++) {
                    double gv = Math.abs(ref.g()[i * V + v]), xv = Math.abs(d.xs[i * H + h]);
                    b1 += (gtol * gn[i] + 2 * u * gv) * xv;
                    abs += gv * xv;
                }
                double bound = b1 + n * e32 * (Math.abs(d.dW0[v * H + h]) + abs) + 1e-30;
                double r = ref.dWs()[v * H + h], x = got.dWs()[v * H + h];
                if (!(Math.abs(x - r) <= bound)) bad.add(new Bad(Math.abs(x - r) / bound, name + " dWs[" + v + "," + h + "] " + x + " vs " + r + " (bound " + bound + ")"));
            }
        bad.sort((a, b) -> Double.compare(b.ratio(), a.ratio()));
        for (Bad b : bad) failures.add(b.text());
    }

    // ---------------------------------------------------------------------------------- GPU

    static boolean gpuPresent() { return CudaFusedLinearLoss.available(); }

    /** Every variant, with and without length normalisation, bf16 and f32, teachers as hidden+head and as logits. */
    @Test
    @Tag("gpu")
    @EnabledIf("gpuPresent")
    void gpuMatchesTheReference() {
        List<String> failures = new ArrayList<>();
        long seed = 101;
        long stream = 0L;
        for (DType dt : new DType[] {DType.F32, DType.BF16})
            for (Variant v : Variant.values())
                for (boolean ln : new boolean[] {false, true}) {
                    LossConfig cfg = LossConfig.defaults(v).withLengthNorm(ln);
                    Data d = data(seed++, 3, 5, 24, 37, ln);
                    boolean logits = (seed & 1) == 0; // alternate: DPO teacher as f32 logits
                    double[] zd = logits ? FusedLinearLossReference.logits(d.xd, d.wd, d.n(), d.H, d.V) : null;
                    FusedLinearLossReference.Result ref = FusedLinearLossReference.run(cfg, d.B, d.T, d.H, d.V, d.xs, d.ws,
                            logits ? null : d.xd, logits ? null : d.wd, zd, d.x2, d.w2, null, d.mask, 0, d.dW0);
                    FusedLinearLossReference.Result got = onGpu(cfg, d, dt, zd, 4, stream);
                    double tol = dt == DType.F32 ? 1e-5 : 1e-4;
                    Compare.Tol t = Compare.Tol.forCase(dt, dt, 1);
                    double u = dt == DType.F32 ? 0 : Math.scalb(1.0, -8);
                    compare(dt + "/" + v + (ln ? "/len_norm" : "") + (logits ? "/dpo_logits" : ""), d, ref,
                            withG(got, ref), tol, t.grad(), u, failures);
                }
        if (!failures.isEmpty()) fail(failures.size() + " mismatches, worst first:\n" + String.join("\n", failures.subList(0, Math.min(12, failures.size()))));
    }

    /** The GPU does not return G; the comparison's bounds use the reference's. */
    private static FusedLinearLossReference.Result withG(FusedLinearLossReference.Result got, FusedLinearLossReference.Result ref) {
        return new FusedLinearLossReference.Result(got.loss(), got.dXs(), got.dWs(), ref.g(), got.weight(), got.tokenLoss(), got.selected(), got.code(), got.token(), got.column());
    }

    private static FusedLinearLossReference.Result onGpu(LossConfig cfg, Data d, DType dt, double[] zd, int chunk, long stream) {
        final int n = d.n(), H = d.H, V = d.V;
        List<MemorySegment> owned = new ArrayList<>();
        try (Arena a = Arena.ofConfined()) {
            java.util.function.BiFunction<double[], DType, MemorySegment> up = (x, t) -> {
                MemorySegment h = a.allocate((long) x.length * t.byteSize, 64);
                for (int i = 0; i < x.length; i++) Elements.set(h, t, i, (float) x[i]);
                MemorySegment g = NativeCuda.malloc(h.byteSize());
                owned.add(g);
                NativeCuda.copyToDevice(g, h, h.byteSize(), stream);
                return g;
            };
            MemorySegment mask = a.allocate(n);
            for (int i = 0; i < n; i++) mask.set(ValueLayout.JAVA_BYTE, i, (byte) (d.mask[i] ? 1 : 0));
            MemorySegment dMask = NativeCuda.malloc(n);
            owned.add(dMask);
            NativeCuda.copyToDevice(dMask, mask, n, stream);
            MemorySegment dX = NativeCuda.malloc((long) n * H * dt.byteSize), dWt = up.apply(d.dW0, DType.F32);
            MemorySegment dWeight = NativeCuda.malloc(n * 4L), dTl = NativeCuda.malloc(n * 4L);
            owned.add(dX); owned.add(dWeight); owned.add(dTl);
            NativeCuda.memset(dX, 0xff, (long) n * H * dt.byteSize, stream); // poisoned: every row must be written
            try (CudaFusedLinearLoss.Call c = CudaFusedLinearLoss.create(cfg).newCall(d.B, d.T, H, V, dt)) {
                c.student(up.apply(d.xs, dt), up.apply(d.ws, dt)).second(up.apply(d.x2, dt), up.apply(d.w2, dt))
                        .mask(dMask).gradHidden(dX).gradHead(dWt).weights(dWeight).tokenLosses(dTl).chunkTokens(chunk);
                if (zd != null) c.dpoLogits(up.apply(zd, DType.F32), DType.F32, V);
                else c.dpo(up.apply(d.xd, dt), up.apply(d.wd, dt));
                c.launch(stream);
                double loss = c.synchronize(stream);
                MemorySegment hx = a.allocate((long) n * H * dt.byteSize), hw = a.allocate((long) V * H * 4), hwt = a.allocate(n * 4L), htl = a.allocate(n * 4L);
                NativeCuda.copyToHost(hx, dX, hx.byteSize(), stream);
                NativeCuda.copyToHost(hw, dWt, hw.byteSize(), stream);
                NativeCuda.copyToHost(hwt, dWeight, hwt.byteSize(), stream);
                NativeCuda.copyToHost(htl, dTl, htl.byteSize(), stream);
                double[] x = new double[n * H], w = new double[V * H], wt = new double[n], tl = new double[n];
                for (int i = 0; i < x.length; i++) x[i] = Elements.get(hx, dt, i);
                for (int i = 0; i < w.length; i++) w[i] = hw.getAtIndex(ValueLayout.JAVA_FLOAT, i);
                for (int i = 0; i < n; i++) { wt[i] = hwt.getAtIndex(ValueLayout.JAVA_FLOAT, i); tl[i] = htl.getAtIndex(ValueLayout.JAVA_FLOAT, i); }
                return new FusedLinearLossReference.Result(loss, x, w, null, wt, tl, c.selectedRows(), 0, -1, -1);
            }
        } finally {
            for (MemorySegment s : owned) NativeCuda.free(s);
        }
    }
}
