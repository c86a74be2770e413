package ai.aligndistil.train;

import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.SplittableRandom;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.BoolOptional;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.ScalarTypeOptional;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorArrayRefOptional;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;

import ai.aligndistil.io.DType;
import ai.aligndistil.kernel.FusedDistillLoss;
import ai.aligndistil.kernel.LossConfig;
import ai.aligndistil.model.CausalLM;
import ai.aligndistil.model.Tensors;
import ai.aligndistil.model.TinyModels;
import ai.aligndistil.model.TorchRuntime;

/**
 * Convergence (the Liger-Kernel test): two copies of a tiny Qwen2 student, trained 20 AdamW steps toward fixed
 * teacher logits, one through the fused loss ({@link FusedDistillLoss} on the logits, {@code logits.backward(grad)}),
 * the other through the same AlignDistil loss composed from libtorch operations under autograd (the formula of the
 * bench's TorchLoss: log_softmax, no-grad teacher and adaptive weight, reverse KL, per-sequence length norm, mean
 * over sequences). f32 throughout. The two loss curves agree within 1e-5 relative at every step, and the loss falls.
 */
@SuppressWarnings("try")
class FusedLossConvergenceTest {
    static final int V = 64, B = 3, T = 10, STEPS = 20;
    static final double LR = 3e-3, TOLERANCE = 1e-5;

    @Test
    void fusedAndComposedLossCurvesAgreeOverTwentySteps() {
        TorchRuntime.init();
        LossConfig cfg = LossConfig.defaults();
        CausalLM fusedModel = TinyModels.random(TinyModels.qwen2(V, 1), 11, ScalarType.Float);
        CausalLM torchModel = TinyModels.random(TinyModels.qwen2(V, 1), 11, ScalarType.Float);
        AdamW fusedOpt = new AdamW(fusedModel.namedParameters(), AdamW.Options.spec());
        AdamW torchOpt = new AdamW(torchModel.namedParameters(), AdamW.Options.spec());
        FusedDistillLoss fused = FusedDistillLoss.create(cfg);

        SplittableRandom rnd = new SplittableRandom(42);
        long[][] ids = new long[B][T];
        for (long[] row : ids) for (int t = 0; t < T; t++) row[t] = 3 + rnd.nextInt(V - 3);
        // teachers: a shared prior, the DPO model favouring a few tokens per position and the reverse model disfavouring them
        float[] zd = new float[B * T * V], zr = new float[B * T * V];
        for (int row = 0; row < B * T; row++) {
            for (int v = 0; v < V; v++) {
                double prior = -0.05 * v + rnd.nextGaussian();
                zd[row * V + v] = (float) (prior + 0.3 * rnd.nextGaussian());
                zr[row * V + v] = (float) (prior + 0.3 * rnd.nextGaussian());
            }
            for (int k = 0; k < 3; k++) {
                int v = rnd.nextInt(V);
                zd[row * V + v] += 2;
                zr[row * V + v] -= 2;
            }
        }
        byte[] mask = new byte[B * T];
        for (int t = 3; t < T; t++) mask[t] = 1;              // prompt of 3
        for (int t = 2; t < T - 3; t++) mask[T + t] = 1;      // right padding
        for (int t = 5; t < T; t++) mask[2 * T + t] = 1;
        Tensor dpo = Tensors.fromFloats(zd, B, T, V), reverse = Tensors.fromFloats(zr, B, T, V);
        float[] maskF = new float[B * T];
        for (int i = 0; i < maskF.length; i++) maskF[i] = mask[i];
        Tensor maskT = Tensors.fromFloats(maskF, B, T);
        Tensor idsT = Tensors.longs(ids);

        double[] fusedCurve = new double[STEPS], torchCurve = new double[STEPS];
        for (int step = 0; step < STEPS; step++) {
            try (PointerScope s = new PointerScope(); Arena arena = Arena.ofConfined()) {
                fusedOpt.zeroGrad();
                Tensor logits = fusedModel.forward(idsT).contiguous();
                Tensor grad = Tensors.zeros(ScalarType.Float, B, T, V);
                MemorySegment maskSeg = arena.allocate(B * T);
                maskSeg.copyFrom(MemorySegment.ofArray(mask));
                try (FusedDistillLoss.Batch batch = fused.newBatch(B, T, V)) {
                    batch.student(Tensors.segment(logits), DType.F32).dpo(Tensors.segment(dpo), DType.F32)
                            .second(Tensors.segment(reverse), DType.F32).mask(maskSeg).grad(Tensors.segment(grad), DType.F32);
                    fusedCurve[step] = batch.run();
                }
                logits.backward(grad, new BoolOptional(), false, new TensorArrayRefOptional());
                fusedOpt.step(LR);

                torchOpt.zeroGrad();
                Tensor loss = composedLoss(torchModel.forward(idsT), dpo, reverse, maskT, cfg);
                loss.backward();
                torchCurve[step] = loss.item_double();
                torchOpt.step(LR);
            }
        }
        int worst = 0;
        for (int i = 0; i < STEPS; i++) if (rel(fusedCurve[i], torchCurve[i]) > rel(fusedCurve[worst], torchCurve[worst])) worst = i;
        StringBuilder curves = new StringBuilder();
        for (int i = 0; i < STEPS; i++) curves.append(String.format("%n  step %2d  fused %.9f  composed %.9f  rel %.2e", i, fusedCurve[i], torchCurve[i], rel(fusedCurve[i], torchCurve[i])));
        assertTrue(rel(fusedCurve[worst], torchCurve[worst]) <= TOLERANCE,
                "loss curves differ by more than " + TOLERANCE + " relative; worst at step " + worst + ":" + curves);
        assertTrue(torchCurve[STEPS - 1] < 0.8 * torchCurve[0], "the loss falls (so the curves compare training, not noise):" + curves);
    }

    private static double rel(double a, double b) { return Math.abs(a - b) / Math.abs(b); }

    /** The AlignDistil loss (aligndistil variant, temperatures 1, length norm on) from libtorch operations. */
    static Tensor composedLoss(Tensor zs, Tensor zd, Tensor zr, Tensor mask, LossConfig cfg) {
        ScalarTypeOptional none = new ScalarTypeOptional();
        long[] last = {-1};
        Tensor logp = zs.log_softmax(-1);
        Tensor logq, coef;
        try (NoGradGuard g = new NoGradGuard()) {
            Tensor tvd = zd.softmax(-1).sub(zr.softmax(-1)).abs().sum(last, true, none);          // [B, T, 1]
            Tensor alpha = tvd.mul(new Scalar(cfg.beta2())).add(new Scalar(cfg.epsilon()));
            logq = zd.add(alpha.mul(zd.sub(zr))).log_softmax(-1);
            coef = alpha.reciprocal().mul(new Scalar(cfg.beta())).squeeze(-1);                   // [B, T]
        }
        Tensor kl = zs.softmax(-1).mul(logp.sub(logq)).sum(last, false, none);                    // [B, T]
        Tensor count = mask.sum(last, false, none);                                              // [B]
        Tensor perSeq = kl.mul(coef).mul(mask).sum(last, false, none).div(count.clamp_min(new Scalar(1.0)));
        Tensor sequences = count.gt(new Scalar(0.0)).to(ScalarType.Float).sum();
        return perSeq.sum().div(sequences.clamp_min(new Scalar(1.0)));
    }
}
