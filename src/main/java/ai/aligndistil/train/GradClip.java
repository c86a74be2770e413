package ai.aligndistil.train;

import java.util.Collection;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.global.torch;

import ai.aligndistil.model.Tensors;
import org.bytedeco.pytorch.global.torch.ScalarType;

/** Clipping by the global L2 norm of all gradients, as {@code torch.nn.utils.clip_grad_norm_}. */
@SuppressWarnings("try")
public final class GradClip {
    private GradClip() {}

    /** The global L2 norm of the defined gradients, accumulated in float64. */
    public static double globalNorm(Collection<Tensor> params) {
        double sq = 0;
        try (PointerScope s = new PointerScope(); NoGradGuard g = new NoGradGuard()) {
            // Per-parameter norms stay where the gradients are and reach the host in one copy (one synchronisation
            // per step on a GPU, not one per parameter); summed here in f64 in parameter order as before.
            TensorVector norms = new TensorVector();
            for (Tensor p : params) {
                Tensor grad = p.grad();
                if (grad == null || !grad.defined()) continue;
                norms.push_back(grad.to(ScalarType.Float).norm());
            }
            if (norms.size() == 0) return 0;
            for (float n : Tensors.toFloats(torch.stack(norms))) sq += (double) n * n;
        }
        return Math.sqrt(sq);
    }

    /**
     * Scales every gradient by {@code maxNorm / (norm + 1e-6)} when the global norm exceeds {@code maxNorm}.
     *
     * @return the global norm before clipping (may be NaN or infinite: gradients are then left as they are
     *         and the caller should skip the step)
     */
    public static double clip(Collection<Tensor> params, double maxNorm) {
        double norm = globalNorm(params);
        if (!Double.isFinite(norm)) return norm;
        double coef = maxNorm / (norm + 1e-6);
        if (coef < 1) {
            try (PointerScope s = new PointerScope(); NoGradGuard g = new NoGradGuard()) {
                Scalar c = new Scalar(coef);
                for (Tensor p : params) {
                    Tensor grad = p.grad();
                    if (grad != null && grad.defined()) grad.mul_(c);
                }
            }
        }
        return norm;
    }
}
