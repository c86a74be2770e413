package ai.aligndistil.train;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;

import org.bytedeco.javacpp.DoublePointer;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.AdamWOptions;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.OptimizerParamGroup;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorVector;
import org.junit.jupiter.api.Test;

import ai.aligndistil.model.CausalLM;
import ai.aligndistil.model.Tensors;
import ai.aligndistil.model.TinyModels;
import ai.aligndistil.model.TorchRuntime;

/**
 * Our {@link AdamW} against libtorch's {@code torch::optim::AdamW} (the presets' {@code org.bytedeco.pytorch.AdamW}),
 * f32, 10 steps with the same gradients on the parameters of a tiny Qwen2 model, parameter groups as ours: weight
 * decay on parameters with more than one dimension, none on 1-D ones (biases, norm weights); betas 0.9/0.95, eps
 * 1e-8, the spec's warmup + cosine learning rate. Bound on every element after every step:
 * |ours - libtorch| <= 1e-6 * max(1, |libtorch|). The gradients span nine orders of magnitude and include exact
 * zeros (unused embedding rows), so the bias corrections, the eps term and skipped moments are all exercised.
 */
@SuppressWarnings("try")
class AdamWParityTest {
    static final int STEPS = 10;
    static final double PEAK_LR = 1e-2, WEIGHT_DECAY = 0.1;

    @Test
    void tenStepsMatchLibtorchAdamW() {
        TorchRuntime.init();
        Map<String, long[]> shapes = CausalLM.parameterShapes(TinyModels.qwen2(64, 2));
        SplittableRandom rnd = new SplittableRandom(20261203L);
        Map<String, Tensor> ours = new LinkedHashMap<>(), theirs = new LinkedHashMap<>();
        for (Map.Entry<String, long[]> e : shapes.entrySet()) {
            float[] init = values(rnd, numel(e.getValue()), 0.1, 0, 0);
            ours.put(e.getKey(), Tensors.fromFloats(init, e.getValue()).requires_grad_(true));
            theirs.put(e.getKey(), Tensors.fromFloats(init, e.getValue()).requires_grad_(true));
        }
        assertTrue(shapes.values().stream().anyMatch(s -> s.length == 1) && shapes.values().stream().anyMatch(s -> s.length > 1),
                "the model has both 1-D and matrix parameters");

        AdamW.Options o = AdamW.Options.spec().withWeightDecay(WEIGHT_DECAY);
        AdamW mine = new AdamW(ours, o);

        List<Tensor> decayed = new ArrayList<>(), plain = new ArrayList<>();
        for (Tensor p : theirs.values()) (p.dim() > 1 ? decayed : plain).add(p);
        AdamWOptions defaults = new AdamWOptions(PEAK_LR);
        DoublePointer betas = defaults.betas();
        // std::tuple<double, double>: libstdc++ stores the elements in reverse; find beta1 by libtorch's default (0.9, 0.999).
        int b1 = betas.get(0) == 0.9 ? 0 : 1;
        assertEquals(0.999, betas.get(1 - b1), "libtorch's default betas (0.9, 0.999) are where we expect them");
        betas.put(b1, o.beta1()).put(1 - b1, o.beta2());
        defaults.eps().put(o.eps());
        defaults.weight_decay().put(WEIGHT_DECAY);
        org.bytedeco.pytorch.AdamW torchOpt = new org.bytedeco.pytorch.AdamW(new TensorVector(decayed.toArray(Tensor[]::new)), defaults);
        torchOpt.add_param_group(new OptimizerParamGroup(new TensorVector(plain.toArray(Tensor[]::new))));
        assertEquals(2, torchOpt.param_groups().size());
        new AdamWOptions(torchOpt.param_groups().get(1).options()).weight_decay().put(0.0);

        LrSchedule schedule = LrSchedule.spec(PEAK_LR, STEPS);
        for (int step = 0; step < STEPS; step++) {
            double lr = schedule.lr(step + 1);  // step 0 of the schedule is lr 0: start one later so every step moves
            try (PointerScope s = new PointerScope()) {
                mine.zeroGrad();
                torchOpt.zero_grad();
                for (Map.Entry<String, long[]> e : shapes.entrySet()) {
                    // the same gradient G for both: d/dp sum(p * G) = G exactly
                    Tensor g = Tensors.fromFloats(values(rnd, numel(e.getValue()), 1.0, 9, 0.1), e.getValue());
                    ours.get(e.getKey()).mul(g).sum().backward();
                    theirs.get(e.getKey()).mul(g).sum().backward();
                }
                mine.step(lr);
                for (int gi = 0; gi < 2; gi++) torchOpt.param_groups().get(gi).options().set_lr(lr);
                torchOpt.step();
            }
            compare(step + 1, ours, theirs);
        }
    }

    private static void compare(int step, Map<String, Tensor> ours, Map<String, Tensor> theirs) {
        double worst = 0;
        String where = "";
        try (PointerScope s = new PointerScope(); NoGradGuard g = new NoGradGuard()) {
            for (String name : ours.keySet()) {
                float[] a = Tensors.toFloats(ours.get(name)), b = Tensors.toFloats(theirs.get(name));
                for (int i = 0; i < a.length; i++) {
                    double excess = Math.abs(a[i] - (double) b[i]) / Math.max(1, Math.abs(b[i]));
                    if (excess > worst) {
                        worst = excess;
                        where = name + "[" + i + "]: ours " + a[i] + ", libtorch " + b[i];
                    }
                }
            }
        }
        assertTrue(worst <= 1e-6, "after step " + step + ": |ours - libtorch| / max(1, |libtorch|) = " + worst + " > 1e-6 at " + where);
    }

    /** n values {@code std * N(0,1) * 10^(-decades * u)}, u uniform in [0, 1); a fraction {@code zeros} of them exactly 0. */
    private static float[] values(SplittableRandom r, long n, double std, double decades, double zeros) {
        float[] x = new float[Math.toIntExact(n)];
        for (int i = 0; i < x.length; i++) {
            if (r.nextDouble() < zeros) continue;
            x[i] = (float) (std * r.nextGaussian() * Math.pow(10, -decades * r.nextDouble()));
        }
        return x;
    }

    private static long numel(long[] shape) {
        long n = 1;
        for (long d : shape) n *= d;
        return n;
    }
}
