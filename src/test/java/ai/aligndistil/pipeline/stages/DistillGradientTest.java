package ai.aligndistil.pipeline.stages;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.ScalarTypeOptional;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import ai.aligndistil.kernel.FusedDistillLoss;
import ai.aligndistil.kernel.LossConfig;
import ai.aligndistil.kernel.Variant;
import ai.aligndistil.model.CausalLM;
import ai.aligndistil.model.ChatTemplate;
import ai.aligndistil.model.Tensors;
import ai.aligndistil.model.TinyModels;
import ai.aligndistil.pipeline.data.Seqs;

/**
 * The distillation step's parameter gradients (fused kernel -> logits.backward(grad)) equal those of the same
 * loss composed from libtorch operations and differentiated by autograd.
 */
class DistillGradientTest {
    static final int V = 37;

    static List<ChatTemplate.Example> batch() {
        List<ChatTemplate.Example> l = new ArrayList<>();
        l.add(new ChatTemplate.Example(new long[] {1, 5, 9, 11, 2, 7, 8, 30, 2}, 4));
        l.add(new ChatTemplate.Example(new long[] {1, 6, 3, 2, 12, 2}, 4));
        l.add(new ChatTemplate.Example(new long[] {1, 6, 3, 4, 5, 20, 21, 22, 23, 24, 2}, 3));
        return l;
    }

    @ParameterizedTest
    @CsvSource({"aligndistil,10,1,1,PAPER", "aligndistil,15,0.7,0.7,CODE_ONPOLICY", "contrast,0.05,1,1,CODE_OFFPOLICY",
            "adaptive,3,1.3,1,PAPER", "theorem1,0.2,1,1,PAPER", "gkd,1,1,1,PAPER"})
    void fusedStepMatchesAutograd(String variant, double beta2, double temp, double studentTemp, Seqs.Positions pos) {
        Variant v = Variant.parse(variant);
        LossConfig cfg = new LossConfig(v, 0.1, beta2, 1e-3, temp, studentTemp, true);
        CausalLM student = TinyModels.random(TinyModels.qwen2(V, 2), 1, ScalarType.Float);
        CausalLM dpo = TinyModels.random(TinyModels.qwen2(V, 2), 2, ScalarType.Float).freeze();
        CausalLM second = TinyModels.random(TinyModels.qwen2(V, 2), 3, ScalarType.Float).freeze();
        double divisor = 5; // sequences of the whole optimiser batch (> this micro-batch: accumulation)
        Map<String, float[]> fused = new java.util.LinkedHashMap<>(), ref = new java.util.LinkedHashMap<>();
        try (PointerScope s = new PointerScope()) {
            Seqs.Packed p = Seqs.pack(batch(), 0);
            student.zeroGrad();
            DistillStage.microStep(FusedDistillLoss.create(cfg), student, dpo, v == Variant.GKD ? null : second, p, pos, divisor, null);
            for (var e : student.namedParameters().entrySet()) fused.put(e.getKey(), Tensors.toFloats(e.getValue().grad()));
            student.zeroGrad();
            composed(cfg, student, dpo, second, p, pos, divisor).backward();
            for (var e : student.namedParameters().entrySet()) ref.put(e.getKey(), Tensors.toFloats(e.getValue().grad()));
        }
        double maxAbs = 0;
        for (String k : fused.keySet()) {
            float[] a = fused.get(k), b = ref.get(k);
            for (int i = 0; i < a.length; i++) {
                maxAbs = Math.max(maxAbs, Math.abs(b[i]));
                assertEquals(b[i], a[i], 1e-5 + 1e-4 * Math.abs(b[i]), k + "[" + i + "]");
            }
        }
        assertTrue(maxAbs > 1e-4, "gradients are not trivially zero: " + maxAbs);
    }

    @org.junit.jupiter.api.Test
    void teacherMetricsMatchLibtorch() {
        CausalLM student = TinyModels.random(TinyModels.qwen2(V, 1), 1, ScalarType.Float);
        CausalLM dpo = TinyModels.random(TinyModels.qwen2(V, 1), 2, ScalarType.Float).freeze();
        CausalLM second = TinyModels.random(TinyModels.qwen2(V, 1), 3, ScalarType.Float).freeze();
        try (PointerScope s = new PointerScope()) {
            Seqs.Packed p = Seqs.pack(batch(), 0);
            DistillStage.Sums sums = new DistillStage.Sums();
            sums.teacherMetrics = true;
            DistillStage.microStep(FusedDistillLoss.create(LossConfig.defaults()), student, dpo, second, p, Seqs.Positions.PAPER, 3, sums);
            Tensor ld = dpo.forward(p.ids()).log_softmax(-1), lr = second.forward(p.ids()).log_softmax(-1);
            Tensor rho = ld.sub(lr).mul(Tensors.scalar(0.1));                                         // [B, T, V]
            Tensor perRow = ld.exp().mul(rho).sum(new long[] {2}, false, new ScalarTypeOptional());   // [B, T]
            Tensor next = rho.narrow(1, 0, p.width() - 1).gather(2, p.ids().narrow(1, 1, p.width() - 1).unsqueeze(2)).squeeze(2);
            float[] row = Tensors.toFloats(perRow), tok = Tensors.toFloats(next);
            double tea = 0, seq = 0;
            int t = p.width();
            for (int i = 0; i < p.rows(); i++) for (int r = p.promptLen()[i] - 1; r <= p.len()[i] - 2; r++) {
                tea += row[i * t + r];
                seq += tok[i * (t - 1) + r];
            }
            assertEquals(tea, sums.teacherReward, 1e-4 * Math.max(1, Math.abs(tea)));
            assertEquals(seq, sums.seqReward, 1e-4 * Math.max(1, Math.abs(seq)));
            assertEquals(3, sums.sequences);
        }
    }

    /** The loss of spec section 3 from libtorch operations: full softmaxes, autograd through the student only. */
    static Tensor composed(LossConfig c, CausalLM student, CausalLM dpo, CausalLM second, Seqs.Packed p, Seqs.Positions pos, double divisor) {
        long b = p.rows(), t = p.width();
        Tensor zs = student.forward(p.ids());
        Tensor logq, coef;
        try (NoGradGuard g = new NoGradGuard()) {
            Tensor zd = dpo.forward(p.ids()), zr = second.forward(p.ids());
            Tensor zstar, alpha;
            if (c.variant() == Variant.GKD) {
                zstar = zd;
                alpha = Tensors.zeros(ScalarType.Float, b, t).add(Tensors.scalar(1));
                coef = alpha;
            } else {
                if (c.variant().adaptive) {
                    Tensor tvd = zd.softmax(-1).sub(zr.softmax(-1)).abs().sum(new long[] {2}, false, new ScalarTypeOptional());
                    alpha = tvd.mul(Tensors.scalar(c.beta2())).add(Tensors.scalar(c.epsilon()));
                    coef = Tensors.zeros(ScalarType.Float, b, t).add(Tensors.scalar(c.beta())).div(alpha);
                } else {
                    alpha = Tensors.zeros(ScalarType.Float, b, t).add(Tensors.scalar(c.beta() / c.beta2()));
                    coef = Tensors.zeros(ScalarType.Float, b, t).add(Tensors.scalar(c.beta2()));
                }
                Tensor a = alpha.unsqueeze(2);
                boolean contrast = c.variant() == Variant.ALIGNDISTIL || c.variant() == Variant.CONTRAST;
                zstar = contrast ? zd.add(a.mul(zd.sub(zr))) : a.mul(zd).add(a.neg().add(Tensors.scalar(1)).mul(zr));
            }
            logq = c.variant() == Variant.GKD ? zstar.log_softmax(-1) : zstar.div(Tensors.scalar(c.temperature())).log_softmax(-1);
        }
        Tensor logp = zs.div(Tensors.scalar(c.studentTemperature())).log_softmax(-1);
        Tensor kl = logp.exp().mul(logp.sub(logq)).sum(new long[] {2}, false, new ScalarTypeOptional());   // [B, T]
        java.lang.foreign.MemorySegment m = java.lang.foreign.Arena.ofAuto().allocate(b * t);
        int[] n = Seqs.distillMask(p, pos, m);
        float[] w = new float[(int) (b * t)];
        for (int i = 0; i < b; i++) for (int r = 0; r < t; r++)
            if (m.get(java.lang.foreign.ValueLayout.JAVA_BYTE, i * t + r) != 0) w[(int) (i * t + r)] = (float) (1.0 / n[i] / divisor);
        return kl.mul(coef).mul(Tensors.fromFloats(w, b, t)).sum();
    }
}
