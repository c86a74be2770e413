package ai.aligndistil.train;

import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * AdamW with decoupled weight decay, the update of {@code torch.optim.AdamW} (and DeepSpeed's FusedAdam in
 * AdamW mode), written over libtorch tensors so its whole state is visible for checkpoints.
 *
 * <p>For each parameter with a gradient {@code g} at step {@code t} (1-based):
 * {@code p *= 1 - lr*wd} (only parameters with more than one dimension: biases and norm weights are not
 * decayed), {@code m = b1*m + (1-b1)*g}, {@code v = b2*v + (1-b2)*g^2},
 * {@code p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)}.
 *
 * <p>State is float32. Parameters that are not float32 (bfloat16) get a float32 master copy that the update
 * is applied to and then copied back (the spec's "bf16 parameters with fp32 master weights"). State tensors
 * are allocated in the constructor, which must run outside any {@code PointerScope}.
 */
@SuppressWarnings("try")
public final class AdamW {
    /**
     * @param beta1       first-moment decay (spec: 0.9)
     * @param beta2       second-moment decay (spec: 0.95)
     * @param eps         added to the denominator (spec: 1e-8)
     * @param weightDecay decoupled weight decay (spec: 0)
     */
    public record Options(double beta1, double beta2, double eps, double weightDecay) {
        /** The spec's values: betas (0.9, 0.95), eps 1e-8, weight decay 0. */
        public static Options spec() { return new Options(0.9, 0.95, 1e-8, 0.0); }

        public Options withWeightDecay(double wd) { return new Options(beta1, beta2, eps, wd); }
    }

    private final Options options;
    private final Map<String, Tensor> params;
    private final Map<String, Tensor> expAvg = new LinkedHashMap<>();
    private final Map<String, Tensor> expAvgSq = new LinkedHashMap<>();
    private final Map<String, Tensor> master = new LinkedHashMap<>();
    private long step;

    /**
     * @param params the trainable parameters by name (the names key the checkpointed state); each must require
     *               grad, which also keeps read-only memory-mapped weights out
     */
    public AdamW(Map<String, Tensor> params, Options options) {
        this.options = options;
        this.params = new LinkedHashMap<>(params);
        try (NoGradGuard g = new NoGradGuard()) {
            for (Map.Entry<String, Tensor> e : this.params.entrySet()) {
                Tensor p = e.getValue();
                if (!p.requires_grad())
                    throw new IllegalArgumentException("parameter '" + e.getKey() + "' does not require grad (a frozen or memory-mapped model cannot be optimised)");
                long[] shape = shape(p);
                // f32 moments on the parameter's device (the master copy below stays there too)
                org.bytedeco.pytorch.TensorOptions f32 = new org.bytedeco.pytorch.TensorOptions(ScalarType.Float)
                        .device(new org.bytedeco.pytorch.DeviceOptional(p.device()));
                expAvg.put(e.getKey(), torch.zeros(shape, f32));
                expAvgSq.put(e.getKey(), torch.zeros(shape, f32));
                if (p.scalar_type().value != ScalarType.Float.value) master.put(e.getKey(), p.detach().to(ScalarType.Float).clone());
            }
        }
    }

    public Options options() { return options; }

    /** Optimizer steps taken so far. */
    public long stepCount() { return step; }

    /** Applies one update with learning rate {@code lr} to every parameter that has a gradient. */
    public void step(double lr) {
        step++;
        double b1 = options.beta1(), b2 = options.beta2();
        double bc1 = 1 - Math.pow(b1, step), bc2 = 1 - Math.pow(b2, step);
        try (PointerScope s = new PointerScope(); NoGradGuard g = new NoGradGuard()) {
            Scalar oneMinusB1 = new Scalar(1 - b1), b2s = new Scalar(b2), oneMinusB2 = new Scalar(1 - b2);
            Scalar sqrtBc2 = new Scalar(Math.sqrt(bc2)), eps = new Scalar(options.eps()), negStep = new Scalar(-lr / bc1);
            Scalar decay = new Scalar(1 - lr * options.weightDecay());
            for (Map.Entry<String, Tensor> e : params.entrySet()) {
                Tensor p = e.getValue();
                Tensor grad = p.grad();
                if (grad == null || !grad.defined()) continue;
                Tensor w = master.getOrDefault(e.getKey(), p);
                Tensor g32 = grad.to(ScalarType.Float);
                if (options.weightDecay() != 0 && p.dim() > 1) w.mul_(decay);
                Tensor m = expAvg.get(e.getKey()), v = expAvgSq.get(e.getKey());
                m.lerp_(g32, oneMinusB1);
                v.mul_(b2s).addcmul_(g32, g32, oneMinusB2);
                Tensor denom = v.sqrt().div(sqrtBc2).add_(eps);
                w.addcdiv_(m, denom, negStep);
                if (w != p) p.copy_(w);
            }
        }
    }

    /** Zeroes every parameter's gradient in place (the next backward accumulates into it). */
    public void zeroGrad() {
        try (PointerScope s = new PointerScope(); NoGradGuard g = new NoGradGuard()) {
            for (Tensor p : params.values()) {
                Tensor grad = p.grad();
                if (grad != null && grad.defined()) grad.zero_();
            }
        }
    }

    /** The parameters this optimizer updates, by name. */
    public Map<String, Tensor> parameters() { return Collections.unmodifiableMap(params); }

    /**
     * The state tensors by checkpoint name: {@code <param>.exp_avg}, {@code <param>.exp_avg_sq} and, for
     * non-float32 parameters, {@code <param>.master}. They alias the live state (load by copying into them).
     */
    public Map<String, Tensor> stateTensors() {
        Map<String, Tensor> m = new LinkedHashMap<>();
        for (String k : params.keySet()) {
            m.put(k + ".exp_avg", expAvg.get(k));
            m.put(k + ".exp_avg_sq", expAvgSq.get(k));
            if (master.containsKey(k)) m.put(k + ".master", master.get(k));
        }
        return m;
    }

    /** Restores the step counter (used with {@link #stateTensors()} when resuming). */
    public void setStepCount(long s) { this.step = s; }

    private static long[] shape(Tensor t) {
        long[] s = new long[(int) t.dim()];
        for (int i = 0; i < s.length; i++) s[i] = t.size(i);
        return s;
    }
}
