package ai.aligndistil.model;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.LinkedHashMap;
import java.util.Map;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;

/** Activation checkpointing per decoder layer gives the gradients of the plain backward. */
@SuppressWarnings("try")
class CheckpointingTest {
    static Map<String, float[]> grads(CausalLM m, long[][] ids, boolean checkpointing) {
        m.checkpointing(checkpointing);
        m.zeroGrad();
        Map<String, float[]> out = new LinkedHashMap<>();
        try (PointerScope s = new PointerScope()) {
            Tensor logits = m.forward(Tensors.longs(ids));
            Tensor loss = logits.to(ScalarType.Float).log_softmax(-1).select(2, 3).mean();
            loss.backward();
            String q0 = "model.layers.0.self_attn.q_proj.weight";
            if (checkpointing) assertFalse(m.namedParameters().get(q0).grad().defined(), "before finishBackward no layer has a gradient");
            m.finishBackward();
            for (var e : m.namedParameters().entrySet()) out.put(e.getKey(), Tensors.toFloats(e.getValue().grad()));
        }
        return out;
    }

    @Test
    void checkpointedGradientsEqualThePlainOnes() {
        ModelConfig c = TinyModels.qwen2(40, 3);
        CausalLM m = TinyModels.random(c, 5, ScalarType.Float);
        long[][] ids = {{1, 5, 9, 10, 2, 7, 3}, {4, 4, 8, 1, 30, 6, 2}};
        Map<String, float[]> plain = grads(m, ids, false), ck = grads(m, ids, true);
        assertEquals(plain.keySet(), ck.keySet());
        double worst = 0;
        String where = "";
        for (String k : plain.keySet()) {
            float[] a = plain.get(k), b = ck.get(k);
            double scale = 0;
            for (float x : a) scale = Math.max(scale, Math.abs(x));
            assertTrue(scale > 0, k + " has a gradient");
            for (int i = 0; i < a.length; i++) {
                double d = Math.abs(a[i] - b[i]) / scale;
                if (d > worst) { worst = d; where = k + "[" + i + "] " + a[i] + " vs " + b[i]; }
            }
        }
        // same operations on the same values; only the order of float additions into shared gradients may differ
        assertTrue(worst <= 1e-5, "worst relative difference " + worst + " at " + where);
    }
}
