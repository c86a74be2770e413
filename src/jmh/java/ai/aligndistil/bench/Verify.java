package ai.aligndistil.bench;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Locale;

import ai.aligndistil.kernel.Backend;
import ai.aligndistil.kernel.Backends;
import ai.aligndistil.io.DType;
import ai.aligndistil.kernel.Elements;
import ai.aligndistil.kernel.FusedDistillLoss;
import ai.aligndistil.kernel.LossConfig;

/**
 * Checks a benchmark's output against the float64 Java reference once, in its setup, so no benchmark ever times a
 * broken kernel. The reference is slow (double loops), so big shapes are checked on a few sampled rows: each row is
 * run through the reference as a [1, 1, V] slice with the sequence divisor set to B * T, which (length normalisation
 * on, every row selected: n_b = T, N = B) gives exactly the row's gradient in the full batch.
 *
 * <p>Bounds (the project's test bounds, kernel/Compare.java): scalars relative 1e-5, gradient rows relative L2 1e-4
 * for f32 inputs; x10 for bf16 inputs; plus half an ulp of a bf16 gradient (2^-8).
 */
final class Verify {
    private Verify() {}

    static final int SAMPLED_ROWS = 4;

    record Bounds(double scalar, double grad) {
        static Bounds of(DType inputs, DType gradType) {
            double s = 1e-5, g = 1e-4;
            if (inputs != DType.F32) { s *= 10; g *= 10; }
            if (gradType == DType.BF16) g += Math.scalb(1.0, -8);
            if (gradType == DType.F16) g += Math.scalb(1.0, -11);
            return new Bounds(s, g);
        }
    }

    /** What the reference says about one row. */
    record RowRef(long row, float[] grad, float weight, float tokenLoss) {}

    static long[] sampledRows(long rows) {
        long[] want = {0, rows / 3, (2 * rows) / 3, rows - 1};
        return java.util.Arrays.stream(want).distinct().limit(SAMPLED_ROWS).toArray();
    }

    /** The reference on one row of the inputs (see the class comment for why the divisor is B * T). */
    static RowRef reference(BenchData d, LossConfig cfg, long row) {
        FusedDistillLoss ref = FusedDistillLoss.create(cfg, Backend.REFERENCE);
        float[] g = new float[d.V];
        float[] w = new float[1], tl = new float[1];
        try (FusedDistillLoss.Batch x = ref.newBatch(1, 1, d.V)) {
            x.student(BenchData.row(d.student, d.dtype, row, d.V), d.dtype)
             .dpo(BenchData.row(d.dpo, d.dtype, row, d.V), d.dtype);
            if (cfg.variant().needsSecondTeacher()) x.second(BenchData.row(d.second, d.dtype, row, d.V), d.dtype);
            x.grad(MemorySegment.ofArray(g), DType.F32)
             .weights(MemorySegment.ofArray(w)).tokenLosses(MemorySegment.ofArray(tl))
             .sequenceDivisor((double) d.B * d.T);
            x.run();
        }
        return new RowRef(row, g, w[0], tl[0]);
    }

    /** Relative L2 error of one gradient row (host memory, dtype {@code gt}) against the reference row. */
    static double gradError(MemorySegment grad, DType gt, long row, int V, float[] ref) {
        double num = 0, den = 0;
        long base = row * V;
        for (int v = 0; v < V; v++) {
            double g = Elements.get(grad, gt, base + v), r = ref[v];
            if (!Double.isFinite(g)) return Double.POSITIVE_INFINITY;
            num += (g - r) * (g - r);
            den += r * r;
        }
        return den == 0 ? Math.sqrt(num) : Math.sqrt(num / den);
    }

    static double scalarError(double got, double want) {
        return Math.abs(got - want) / Math.max(1.0, Math.abs(want));
    }

    /**
     * The fused kernel on its own batch: one run with per-row weights and token losses (poisoned gradient first),
     * sampled rows against the reference, the loss against the mean of the token losses, then the optional outputs
     * are detached again (the timed call writes only the loss and the gradient) and a second run must give the same
     * loss. Returns a one-line summary.
     */
    static String fused(String who, FusedDistillLoss.Batch batch, BenchData d, LossConfig cfg) {
        Bounds bounds = Bounds.of(d.dtype, d.gradType);
        long rows = d.rows();
        try (Arena a = Arena.ofConfined()) {
            MemorySegment w = a.allocate(rows * 4, 8), tl = a.allocate(rows * 4, 8);
            d.poisonGrad();
            batch.weights(w).tokenLosses(tl);
            double loss = batch.run();
            batch.weights(null).tokenLosses(null);
            double worstGrad = 0, worstScalar = 0;
            for (long row : sampledRows(rows)) {
                RowRef r = reference(d, cfg, row);
                double ge = gradError(d.grad, d.gradType, row, d.V, r.grad());
                double we = scalarError(w.getAtIndex(ValueLayout.JAVA_FLOAT, row), r.weight());
                double te = scalarError(tl.getAtIndex(ValueLayout.JAVA_FLOAT, row), r.tokenLoss());
                if (!(ge <= bounds.grad()) || !(we <= bounds.scalar()) || !(te <= bounds.scalar()))
                    throw new IllegalStateException(String.format(Locale.ROOT,
                            "%s: row %d differs from the reference: grad rel-L2 %.3g (bound %.3g), weight %.3g, token loss %.3g (bound %.3g)",
                            who, row, ge, bounds.grad(), we, te, bounds.scalar()));
                worstGrad = Math.max(worstGrad, ge);
                worstScalar = Math.max(worstScalar, Math.max(we, te));
            }
            // Every row selected: loss = (1/B) sum_b (1/T) sum_t token_loss = the mean of the token losses.
            double mean = 0;
            for (long row = 0; row < rows; row++) mean += tl.getAtIndex(ValueLayout.JAVA_FLOAT, row);
            mean /= rows;
            double le = scalarError(loss, mean);
            if (!(le <= bounds.scalar()))
                throw new IllegalStateException(who + ": loss " + loss + " is not the mean of the token losses " + mean + " (error " + le + ")");
            // A gradient row that the kernel never wrote would still hold the poison (NaN): check one more row fully.
            checkFinite(who, d.grad, d.gradType, rows / 2, d.V);
            double again = batch.run();
            if (Double.compare(again, loss) != 0 && scalarError(again, loss) > 1e-12)
                throw new IllegalStateException(who + ": second run gave loss " + again + ", first " + loss);
            return String.format(Locale.ROOT, "verified %s against the float64 reference on %d rows: grad rel-L2 <= %.2g (bound %.2g), "
                    + "weight/token loss <= %.2g; loss %.8g", who, sampledRows(rows).length, worstGrad, bounds.grad(), worstScalar, loss);
        }
    }

    /**
     * Another implementation's output (libtorch, CUDA): its gradient rows (host memory) against the reference, and
     * its loss against the loss oracle (the fused CPU kernel, whose token losses are themselves checked against the
     * reference on sampled rows by {@link #oracleLoss}).
     */
    static String other(String who, BenchData d, LossConfig cfg, MemorySegment grad, DType gradType, double loss, double oracle) {
        Bounds bounds = Bounds.of(d.dtype, gradType);
        double worstGrad = 0;
        for (long row : sampledRows(d.rows())) {
            RowRef r = reference(d, cfg, row);
            double ge = gradError(grad, gradType, row, d.V, r.grad());
            if (!(ge <= bounds.grad()))
                throw new IllegalStateException(String.format(Locale.ROOT, "%s: gradient row %d differs from the reference: rel-L2 %.3g (bound %.3g)",
                        who, row, ge, bounds.grad()));
            worstGrad = Math.max(worstGrad, ge);
        }
        double le = scalarError(loss, oracle);
        if (!(le <= bounds.scalar()))
            throw new IllegalStateException(String.format(Locale.ROOT, "%s: loss %.9g differs from the checked fused CPU loss %.9g (error %.3g, bound %.3g)",
                    who, loss, oracle, le, bounds.scalar()));
        return String.format(Locale.ROOT, "verified %s against the float64 reference on %d rows: grad rel-L2 <= %.2g (bound %.2g); loss %.8g vs %.8g (error %.2g)",
                who, sampledRows(d.rows()).length, worstGrad, bounds.grad(), loss, oracle, le);
    }

    /**
     * The full-batch loss from the fused CPU kernel, checked: its sampled token losses and gradient rows against the
     * reference (via {@link #fused}). Uses and overwrites {@code d.grad}.
     */
    static double oracleLoss(BenchData d, LossConfig cfg) {
        if (!Backends.available(Backend.CPU))
            throw new IllegalStateException("the loss oracle needs the native CPU library: " + ai.aligndistil.kernel.NativeCpu.problem());
        FusedDistillLoss op = FusedDistillLoss.create(cfg, Backend.CPU);
        try (FusedDistillLoss.Batch b = op.newBatch(d.B, d.T, d.V)) {
            bind(b, d, cfg);
            fused("loss oracle (fused cpu)", b, d, cfg);
            return b.loss();
        }
    }

    /** Binds the inputs, mask and gradient of {@code d} to a batch. */
    static FusedDistillLoss.Batch bind(FusedDistillLoss.Batch b, BenchData d, LossConfig cfg) {
        b.student(d.student, d.dtype).dpo(d.dpo, d.dtype);
        if (cfg.variant().needsSecondTeacher()) b.second(d.second, d.dtype);
        return b.mask(d.mask).grad(d.grad, d.gradType);
    }

    static void checkFinite(String who, MemorySegment grad, DType gt, long row, int V) {
        for (int v = 0; v < V; v++) {
            float g = Elements.get(grad, gt, row * V + v);
            if (!Float.isFinite(g)) throw new IllegalStateException(who + ": gradient row " + row + " column " + v + " is " + g + " (never written?)");
        }
    }
}
