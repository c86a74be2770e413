package ai.aligndistil.model;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Random;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.BoolOptional;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorArrayRefOptional;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import ai.aligndistil.io.DType;
import ai.aligndistil.kernel.FusedDistillLoss;
import ai.aligndistil.kernel.FusedDistillLossReference;
import ai.aligndistil.kernel.LossConfig;
import ai.aligndistil.kernel.Variant;

/**
 * ChunkedFusedLinearLoss (chunked head matmuls + native row kernel) against (1) the float64 reference on the same
 * logits followed by float64 matmuls, and (2) the unfused libtorch path (full logits, FusedDistillLoss,
 * {@code logits.backward(grad)}).
 *
 * <p>Tolerances. The row kernel's bound (kernel/Compare.java, the fused-loss issue) is per gradient row:
 * ||dG_i||_2 <= g ||G_i||_2, g = 1e-4 for f32 inputs; for bf16 inputs 1e-3 (x10) plus 2^-8 for the bf16
 * gradient it writes. By Cauchy-Schwarz a row-norm error bound carries to the products as
 * |d dX_ij| <= g ||G_i|| ||W_:j||   and   |d dW_vj| <= sum_i g ||G_i|| |X_ij|.
 * The matmuls add their own rounding: accumulation over K terms in f32, gamma_K = K 2^-24 relative to
 * the envelope (|G| |W|)_ij <= ||G_i|| ||W_:j||; for bf16 also 2^-9 for rounding s X and 2^-9 for the bf16
 * product, both relative to the same envelope. So, per element,
 * tol(dX_ij) = (g + gamma_V + r) ||G_i|| ||W_:j||  and  tol(dW_vj) = (g + gamma_N + r) sum_i ||G_i|| |X_ij|,
 * r = 0 (f32) or 2^-8 (bf16). Loss: the kernel's scalar bound 1e-5 max(1, |ref|) (x10 for bf16).
 * Fused vs unfused: both within these bounds of the reference, so within twice them of each other.
 * For bf16 the reference runs on the bf16 logits libtorch's mm produces for the whole batch (the inputs the
 * kernel sees), not on exact products.
 */
class ChunkedFusedLinearLossTest {
    static {
        TorchRuntime.init();
    }

    record Case(Variant variant, int B, int T, int H, int V, int chunk, String mask, boolean lengthNorm, boolean teacherLogits,
                ScalarType dtype, double divisor) {}

    @ParameterizedTest(name = "{0} B{1} T{2} H{3} V{4} C{5} mask={6} ln={7} logits={8} {9} div={10}")
    @CsvSource({
            // variant, B, T, H, V, C, mask, lengthNorm, teachersAsLogits, dtype, seqDivisor
            "aligndistil, 3, 5, 7, 37, 4, empty-seq, true, false, f32, 0",    // N = 15 not a multiple of C
            "aligndistil, 3, 5, 7, 37, 1, random, false, false, f32, 0",      // C = 1
            "aligndistil, 3, 5, 7, 37, 64, empty-seq, true, true, f32, 0",    // C >= N, teachers as logits
            "aligndistil, 2, 7, 9, 41, 7, all, true, false, f32, 5",          // C divides N, divisor > sequences
            "contrast, 3, 5, 7, 37, 4, empty-seq, false, true, f32, 0",
            "adaptive, 4, 3, 5, 29, 5, random, true, false, f32, 0",
            "theorem1, 3, 5, 7, 37, 6, empty-seq, true, true, f32, 3",
            "gkd, 3, 5, 7, 37, 4, random, true, false, f32, 0",
            "gkd, 1, 9, 11, 33, 2, random, false, true, f32, 0",
            "aligndistil, 3, 5, 8, 37, 4, empty-seq, true, false, bf16, 0",
            "contrast, 2, 7, 9, 41, 3, random, false, true, bf16, 0",
            "adaptive, 3, 5, 7, 37, 16, empty-seq, true, false, bf16, 0",
            "gkd, 3, 5, 7, 37, 1, random, true, true, bf16, 0",
            "aligndistil, 3, 5, 7, 37, 4, none-selected, true, false, f32, 0",
    })
    void matchesReferenceAndUnfused(String variant, int B, int T, int H, int V, int chunk, String mask, boolean lengthNorm,
                                    boolean teacherLogits, String dtype, double divisor) {
        Case c = new Case(Variant.parse(variant), B, T, H, V, chunk, mask, lengthNorm, teacherLogits, Tensors.parseDtype(dtype), divisor);
        try (PointerScope scope = new PointerScope(); Arena arena = Arena.ofConfined()) {
            check(c, arena);
        }
    }

    private static void check(Case c, Arena arena) {
        LossConfig cfg = new LossConfig(c.variant, 0.1, 10, 1e-3, 1.3, 0.9, c.lengthNorm);
        long N = (long) c.B * c.T;
        boolean bf16 = c.dtype.value == ScalarType.BFloat16.value;
        torch.manual_seed(17 + c.V + c.chunk);
        // Logits ~ N(0, 2^2): hidden N(0,1), head N(0, 4/H).
        Tensor xs = torch.randn(c.B, c.T, c.H).to(c.dtype), ws = torch.randn(c.V, c.H).mul(Tensors.scalar(2 / Math.sqrt(c.H))).to(c.dtype);
        Tensor xd = torch.randn(c.B, c.T, c.H + 1).to(c.dtype), wd = torch.randn(c.V, c.H + 1).mul(Tensors.scalar(2 / Math.sqrt(c.H + 1))).to(c.dtype);
        Tensor x2 = torch.randn(c.B, c.T, c.H).to(c.dtype), w2 = torch.randn(c.V, c.H).mul(Tensors.scalar(2 / Math.sqrt(c.H))).to(c.dtype);
        MemorySegment mask = mask(c, arena);
        boolean second = c.variant.needsSecondTeacher();

        // 1. fused
        ChunkedFusedLinearLoss.Result got;
        Tensor zdLogits = logits(xd, wd), z2Logits = logits(x2, w2);
        try (ChunkedFusedLinearLoss fl = new ChunkedFusedLinearLoss(cfg, c.chunk)) {
            fl.sequenceDivisor(c.divisor);
            ChunkedFusedLinearLoss.Teacher d = c.teacherLogits ? ChunkedFusedLinearLoss.Teacher.logits(zdLogits) : ChunkedFusedLinearLoss.Teacher.hidden(xd, wd);
            ChunkedFusedLinearLoss.Teacher s = !second ? null : c.teacherLogits ? ChunkedFusedLinearLoss.Teacher.logits(z2Logits) : ChunkedFusedLinearLoss.Teacher.hidden(x2, w2);
            got = fl.run(xs, ws, d, s, mask);
            // a second call reuses the cached workspace and must give the same answer
            ChunkedFusedLinearLoss.Result again = fl.run(xs, ws, d, s, mask);
            assertEquals(got.loss(), again.loss(), 0.0, "second call, same workspace");
            assertEquals(0.0, again.dHead().sub(got.dHead()).abs().max().item_double(), 0.0, "second call dW");
        }

        // 2. float64 reference on the logits the kernel sees (bf16: libtorch's bf16 products; f32: exact products)
        Tensor zs = bf16 ? logits(xs, ws) : logits(xs.to(ScalarType.Double), ws.to(ScalarType.Double));
        Tensor zd = bf16 ? zdLogits : logits(xd.to(ScalarType.Double), wd.to(ScalarType.Double));
        Tensor z2 = bf16 ? z2Logits : logits(x2.to(ScalarType.Double), w2.to(ScalarType.Double));
        boolean[] m = new boolean[(int) N];
        for (int i = 0; i < N; i++) m[i] = mask.get(ValueLayout.JAVA_BYTE, i) != 0;
        float[] g = new float[(int) (N * c.V)];
        double refLoss = FusedDistillLossReference.run(cfg, c.B, c.T, c.V, Tensors.toFloats(zs), Tensors.toFloats(zd),
                second ? Tensors.toFloats(z2) : null, m, g, null, null, null, c.divisor);
        Tensor G = Tensors.fromFloats(g, N, c.V).to(ScalarType.Double);
        Tensor X = xs.to(ScalarType.Double).view(N, c.H), W = ws.to(ScalarType.Double);
        double[] dXref = doubles(G.mm(W)), dWref = doubles(G.t().mm(X));
        double[] gNorm = doubles(G.pow(Tensors.scalar(2)).sum(new long[] {1}, false, new org.bytedeco.pytorch.ScalarTypeOptional()).sqrt());
        double[] wColNorm = doubles(W.pow(Tensors.scalar(2)).sum(new long[] {0}, false, new org.bytedeco.pytorch.ScalarTypeOptional()).sqrt());
        double[] xAbs = doubles(X.abs());
        double gk = bf16 ? 1e-3 + Math.scalb(1.0, -8) : 1e-4;
        double r = bf16 ? Math.scalb(1.0, -8) : 0;
        double[] tolX = new double[dXref.length], tolW = new double[dWref.length];
        for (int i = 0; i < N; i++) for (int j = 0; j < c.H; j++)
            tolX[i * c.H + j] = (gk + c.V * 0x1p-24 + r) * gNorm[i] * wColNorm[j];
        for (int v = 0; v < c.V; v++) for (int j = 0; j < c.H; j++) {
            double e = 0;
            for (int i = 0; i < N; i++) e += gNorm[i] * xAbs[i * c.H + j];
            tolW[v * c.H + j] = (gk + N * 0x1p-24 + r) * e;
        }
        double lossTol = (bf16 ? 1e-4 : 1e-5) * Math.max(1, Math.abs(refLoss));
        String ctx = c.toString();
        assertEquals(refLoss, got.loss(), lossTol, ctx + ": loss vs reference");
        close(ctx + " dX vs reference", doubles(got.dHidden()), dXref, tolX, c.H);
        close(ctx + " dW vs reference", doubles(got.dHead()), dWref, tolW, c.H);

        // 3. the unfused libtorch path: full logits, FusedDistillLoss, autograd
        Tensor xsLeaf = xs.detach().clone().requires_grad_(true), wsLeaf = ws.detach().clone().requires_grad_(true);
        Tensor full = xsLeaf.view(N, c.H).mm(wsLeaf.t()).view(c.B, c.T, c.V).contiguous();
        Tensor grad = Tensors.zeros(c.dtype, c.B, c.T, c.V);
        DType dt = bf16 ? DType.BF16 : DType.F32;
        double unfusedLoss;
        try (FusedDistillLoss.Batch b = FusedDistillLoss.create(cfg).newBatch(c.B, c.T, c.V)) {
            b.student(Tensors.segment(full), dt).dpo(Tensors.segment(zdLogits), dt).mask(mask).grad(Tensors.segment(grad), dt)
                    .sequenceDivisor(c.divisor);
            if (second) b.second(Tensors.segment(z2Logits), dt);
            unfusedLoss = b.run();
        }
        full.backward(grad, new BoolOptional(), false, new TensorArrayRefOptional());
        assertEquals(unfusedLoss, got.loss(), 2 * lossTol, ctx + ": loss vs unfused");
        if (got.selectedRows() > 0) {
            double[] ux = doubles(xsLeaf.grad()), uw = doubles(wsLeaf.grad());
            close(ctx + " dX vs unfused", doubles(got.dHidden()), ux, times(tolX, 2), c.H);
            close(ctx + " dW vs unfused", doubles(got.dHead()), uw, times(tolW, 2), c.H);
            assertTrue(max(dWref) > 1e-6 && max(dXref) > 1e-6, "gradients are not trivially zero");
        } else {
            assertEquals(0.0, max(doubles(got.dHead())), 0.0, "no selected row: dW is zero");
            assertEquals(0.0, max(doubles(got.dHidden())), 0.0, "no selected row: dX is zero");
            assertEquals(0.0, got.loss(), 0.0);
        }
    }

    /**
     * Tied head: the head is also the embedding the hidden states come from, so d loss / d W has two parts,
     * the head's (dW of the fused loss) and the embedding's (through hidden.backward(dX)); their sum must equal
     * autograd through the unfused logits.
     */
    @Test
    void tiedHeadGradientSumsBothUses() {
        LossConfig cfg = LossConfig.defaults();
        int B = 2, T = 6, H = 8, V = 23;
        long N = (long) B * T;
        try (PointerScope scope = new PointerScope(); Arena arena = Arena.ofConfined(); ChunkedFusedLinearLoss fl = new ChunkedFusedLinearLoss(cfg, 5)) {
            torch.manual_seed(5);
            Tensor emb = torch.randn(V, H).mul(Tensors.scalar(0.7)).requires_grad_(true);
            long[] idv = new long[(int) N];
            Random rnd = new Random(3);
            for (int i = 0; i < N; i++) idv[i] = rnd.nextInt(V);
            Tensor ids = Tensors.fromLongs(idv, B, T);
            Tensor zd = torch.randn(B, T, V).mul(Tensors.scalar(2)), z2 = torch.randn(B, T, V).mul(Tensors.scalar(2));
            MemorySegment mask = arena.allocate(N);
            for (int i = 0; i < N; i++) mask.set(ValueLayout.JAVA_BYTE, i, (byte) (i % 3 == 0 ? 0 : 1));

            Tensor hidden = torch.embedding(emb, ids).tanh().mul(Tensors.scalar(2));
            ChunkedFusedLinearLoss.Result res;
            try (NoGradGuard g = new NoGradGuard()) {
                res = fl.run(hidden.detach(), emb.detach(), ChunkedFusedLinearLoss.Teacher.logits(zd), ChunkedFusedLinearLoss.Teacher.logits(z2), mask);
            }
            hidden.backward(res.dHidden(), new BoolOptional(), false, new TensorArrayRefOptional());
            Tensor fusedGrad = emb.grad().add(res.dHead());
            double[] fused = doubles(fusedGrad);

            emb.mutable_grad().put(new Tensor());
            Tensor logits = torch.embedding(emb, ids).tanh().mul(Tensors.scalar(2)).matmul(emb.t()).contiguous();
            Tensor grad = Tensors.zeros(ScalarType.Float, B, T, V);
            try (FusedDistillLoss.Batch b = FusedDistillLoss.create(cfg).newBatch(B, T, V)) {
                b.student(Tensors.segment(logits), DType.F32).dpo(Tensors.segment(zd), DType.F32).second(Tensors.segment(z2), DType.F32)
                        .mask(mask).grad(Tensors.segment(grad), DType.F32);
                assertEquals(b.run(), res.loss(), 1e-6 * Math.max(1, Math.abs(res.loss())));
            }
            logits.backward(grad, new BoolOptional(), false, new TensorArrayRefOptional());
            double[] want = doubles(emb.grad());
            // Both are the same f32 kernel output through different f32 matmul orders: 1e-5 relative to the largest
            // element (K <= 23 products of O(1) factors, gamma_K ~ 1e-6, plus the s-scaling order).
            double m = max(want);
            double[] tol = new double[want.length];
            java.util.Arrays.fill(tol, 1e-5 * m);
            close("tied head gradient", fused, want, tol, H);
            assertTrue(m > 1e-4, "gradient is not trivially zero");
        }
    }

    @Test
    void rejectsBadInput() {
        try (PointerScope scope = new PointerScope(); ChunkedFusedLinearLoss fl = new ChunkedFusedLinearLoss(LossConfig.defaults(), 4)) {
            Tensor x = torch.randn(2, 3, 4), w = torch.randn(11, 4), z = torch.randn(2, 3, 11);
            ChunkedFusedLinearLoss.Teacher t = ChunkedFusedLinearLoss.Teacher.logits(z);
            assertThrows(IllegalArgumentException.class, () -> fl.run(x, torch.randn(11, 5), t, t, null), "head H mismatch");
            assertThrows(IllegalArgumentException.class, () -> fl.run(x, w, ChunkedFusedLinearLoss.Teacher.logits(torch.randn(2, 3, 12)), t, null), "teacher V");
            assertThrows(IllegalArgumentException.class, () -> fl.run(x, w, t, null, null), "aligndistil needs the second teacher");
            assertThrows(IllegalArgumentException.class, () -> fl.run(x.to(ScalarType.Double), w.to(ScalarType.Double), t, t, null), "f64");
            assertThrows(IllegalArgumentException.class, () -> new ChunkedFusedLinearLoss(LossConfig.defaults(), -1));
            Tensor bad = z.clone();
            bad.view(-1).narrow(0, 13, 1).fill_(Tensors.scalar(Double.NaN)); // token 1 of sequence 0... row 1, column 2
            var e = assertThrows(ai.aligndistil.kernel.NonFiniteLogitsException.class, () -> fl.run(x, w, ChunkedFusedLinearLoss.Teacher.logits(bad), t, null));
            assertEquals(1, e.position(), e.getMessage());
            assertEquals(0, e.batchIndex(), e.getMessage());
            assertEquals(2, e.column(), e.getMessage());
        }
    }

    // ------------------------------------------------------------------ helpers

    static Tensor logits(Tensor x, Tensor w) {
        try (NoGradGuard g = new NoGradGuard()) {
            return x.view(-1, x.size(2)).mm(w.t()).view(x.size(0), x.size(1), w.size(0)).contiguous();
        }
    }

    static MemorySegment mask(Case c, Arena arena) {
        long N = (long) c.B * c.T;
        MemorySegment m = arena.allocate(N);
        Random rnd = new Random(c.V * 31L + c.chunk);
        for (int i = 0; i < N; i++) {
            boolean on = switch (c.mask) {
                case "all" -> true;
                case "none-selected" -> false;
                case "empty-seq" -> i / c.T != 1 && rnd.nextDouble() < 0.7; // sequence 1 has no selected row
                default -> rnd.nextDouble() < 0.6;
            };
            m.set(ValueLayout.JAVA_BYTE, i, (byte) (on ? 1 : 0));
        }
        return m;
    }

    static double[] doubles(Tensor t) {
        Tensor d = t.detach().to(ScalarType.Double).contiguous();
        double[] out = new double[Math.toIntExact(d.numel())];
        MemorySegment.copy(Tensors.segment(d), ValueLayout.JAVA_DOUBLE, 0, out, 0, out.length);
        return out;
    }

    static double[] times(double[] a, double k) {
        double[] r = a.clone();
        for (int i = 0; i < r.length; i++) r[i] *= k;
        return r;
    }

    static double max(double[] a) {
        double m = 0;
        for (double v : a) m = Math.max(m, Math.abs(v));
        return m;
    }

    /** Element-wise |got - want| <= tol; on failure lists the five worst elements (row, column, values, tolerance). */
    static void close(String what, double[] got, double[] want, double[] tol, int cols) {
        assertEquals(want.length, got.length, what + ": length");
        record Bad(int i, double err, double ratio) {}
        List<Bad> bad = new ArrayList<>();
        for (int i = 0; i < want.length; i++) {
            double err = Math.abs(got[i] - want[i]);
            if (!(err <= tol[i])) bad.add(new Bad(i, err, err / tol[i]));
        }
        if (bad.isEmpty()) return;
        bad.sort(Comparator.comparingDouble(b -> -(Double.isNaN(b.ratio()) ? Double.MAX_VALUE : b.ratio())));
        StringBuilder sb = new StringBuilder(what + ": " + bad.size() + " of " + want.length + " elements out of tolerance; worst:");
        for (Bad b : bad.subList(0, Math.min(5, bad.size())))
            sb.append(String.format("%n  [%d, %d] got %.9g want %.9g |err| %.3g tol %.3g (x%.1f)", b.i() / cols, b.i() % cols, got[b.i()], want[b.i()],
                    b.err(), tol[b.i()], b.ratio()));
        throw new AssertionError(sb.toString());
    }
}
