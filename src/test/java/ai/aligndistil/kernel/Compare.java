package ai.aligndistil.kernel;

import ai.aligndistil.io.DType;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;

/**
 * Compares a backend's outputs with the reference's and explains failures with the worst elements.
 *
 * <p>Tolerances (where the numbers come from):
 * <ul>
 *   <li>Scalars (loss, weight, token_loss, metrics): |got - ref| <= tol * max(1, |ref|), i.e. relative above 1 and
 *       absolute below, with tol = 1e-5 for f32 inputs: the acceptance bound of the fused-loss issue. The kernels
 *       compute elements in f32 (relative error ~1e-7 per exp/log) and fold row sums in f64, so the measured error
 *       is one to two orders below the bound.</li>
 *   <li>Gradient rows: ||got - ref||_2 <= gtol * ||ref||_2 per row, gtol = 1e-4 for f32 (the bound), plus
 *       the rounding of the output dtype: 2^-8 for a bf16 gradient, 2^-11 for f16 (half an ulp, relative).</li>
 *   <li>bf16/f16 inputs and |logits| >= 1e4: both bounds x10 (the allowance: z* = z_d + alpha (z_d - z_2)
 *       with alpha up to 20 is formed in f32, and for logits of 1e4 one f32 ulp is 1e-3).</li>
 * </ul>
 */
final class Compare {
    private Compare() {}

    record Tol(double scalar, double grad) {
        static Tol f32() { return new Tol(1e-5, 1e-4); }

        Tol times(double k) { return new Tol(scalar * k, grad * k); }

        /** The bound for inputs of this dtype and magnitude, and a gradient written in {@code gradType}. */
        static Tol forCase(DType inputs, DType gradType, double magnitude) {
            Tol t = f32();
            if (inputs != DType.F32) t = t.times(10);
            if (magnitude >= 1e4) t = t.times(10);
            double out = switch (gradType) {
                case F32 -> 0;
                case BF16 -> Math.scalb(1.0, -8);
                case F16 -> Math.scalb(1.0, -11);
                default -> throw new IllegalArgumentException("gradient dtype " + gradType);
            };
            return new Tol(t.scalar(), t.grad() + out);
        }
    }

    record Worst(String what, long row, long col, double got, double want, double err) {}

    static void scalar(String what, double got, double want, double tol) {
        double err = Math.abs(got - want) / Math.max(1.0, Math.abs(want));
        if (!(err <= tol)) throw new AssertionError(what + ": got " + got + ", reference " + want + " (error " + err + " > " + tol + ")");
    }

    static void outputs(String ctx, Inputs in, Inputs.Outputs got, Inputs.Outputs ref, Tol tol) {
        List<Worst> bad = new ArrayList<>();
        long rows = (long) in.B * in.T;
        for (long row = 0; row < rows; row++) {
            add(bad, "weight", row, -1, got.weight(row), ref.weight(row), tol.scalar());
            add(bad, "token_loss", row, -1, got.tokenLoss(row), ref.tokenLoss(row), tol.scalar());
            for (int k = 0; k < 3; k++) add(bad, "metrics[" + k + "]", row, k, got.metric(row, k), ref.metric(row, k), tol.scalar());
            double num = 0, den = 0;
            long worstCol = -1;
            double worstErr = -1;
            for (long v = 0; v < in.V; v++) {
                double g = got.grad(row * in.V + v), r = ref.grad(row * in.V + v);
                if (!Double.isFinite(g)) { worstCol = v; worstErr = Double.POSITIVE_INFINITY; num = Double.POSITIVE_INFINITY; break; }
                num += (g - r) * (g - r);
                den += r * r;
                if (Math.abs(g - r) > worstErr) { worstErr = Math.abs(g - r); worstCol = v; }
            }
            double rel = den == 0 ? Math.sqrt(num) : Math.sqrt(num / den);
            if (!(rel <= tol.grad()))
                bad.add(new Worst("grad row (relative L2 " + rel + ")", row, worstCol, got.grad(row * in.V + worstCol), ref.grad(row * in.V + worstCol), rel));
        }
        if (!bad.isEmpty()) {
            bad.sort(Comparator.comparingDouble(Worst::err).reversed());
            StringBuilder m = new StringBuilder(ctx + ": " + bad.size() + " mismatches; worst:\n");
            for (Worst w : bad.subList(0, Math.min(8, bad.size())))
                m.append(String.format("  %-32s row %d (b=%d, t=%d) col %d: got %.9g, reference %.9g (error %.3g)%n",
                        w.what(), w.row(), w.row() / in.T, w.row() % in.T, w.col(), w.got(), w.want(), w.err()));
            throw new AssertionError(m.toString());
        }
    }

    private static void add(List<Worst> bad, String what, long row, long col, double got, double want, double tol) {
        double err = Math.abs(got - want) / Math.max(1.0, Math.abs(want));
        if (!(err <= tol)) bad.add(new Worst(what, row, col, got, want, Double.isNaN(err) ? Double.POSITIVE_INFINITY : err));
    }
}
