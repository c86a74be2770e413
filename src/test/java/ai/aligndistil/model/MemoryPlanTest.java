package ai.aligndistil.model;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Map;

import org.junit.jupiter.api.Test;

/** The memory plan's numbers for Qwen2.5-0.5B, each term computed by hand from the formulas of {@link MemoryPlan}. */
class MemoryPlanTest {
    static final ModelConfig Q05 = ModelConfig.fromJson(ai.aligndistil.tools.RandomCheckpoint.preset("qwen2.5-0.5b"));

    @Test
    void qwen05bBf16DistillAt2048Tokens() {
        long p = 494_032_768L; // Qwen2.5-0.5B's published parameter count (tied head once)
        assertEquals(p, Q05.parameterCount());
        MemoryPlan m = MemoryPlan.of(Q05, 2, 1, 2048, 2, MemoryPlan.Kind.DISTILL, false, 0, true);
        Map<String, Long> x = m.parts();
        assertEquals(2 * p, x.get("student_weights"));
        assertEquals(4 * p, x.get("master_weights"));
        assertEquals(2 * p, x.get("gradients"));
        assertEquals(8 * p, x.get("optimizer"));
        assertEquals(2 * 2 * p, x.get("frozen_weights"));
        assertEquals(4L * 2048 * 151936 * 2, x.get("logits"));                 // student, gradient, two teachers
        long perLayer = 2048L * (2 * (4 * 896 + 2 * 896 + 2 * 128 + 4 * 4864) + 16 * 896);
        assertEquals(132_120_576L, perLayer);
        assertEquals(24 * perLayer, x.get("activations"));
        assertEquals(3L << 29, x.get("overhead"));
        long sum = 0;
        for (long v : x.values()) sum += v;
        assertEquals(sum, m.total());
        // checkpointing keeps the layer inputs and one layer; fused-linear three [C, V] chunks and the f32 head gradient
        MemoryPlan ck = MemoryPlan.of(Q05, 2, 1, 2048, 2, MemoryPlan.Kind.DISTILL, true, 1024, true);
        assertEquals(24L * 2048 * 896 * 2 + perLayer, ck.parts().get("activations"));
        assertEquals(3L * 1024 * 151936 * 2 + 4L * 151936 * 896, ck.parts().get("logits"));
        assertTrue(ck.total() < m.total());
        // on-policy: the KV cache of 64 rollouts of 2048 tokens (2 L K S b each) and the sampler's 12 V per rollout
        MemoryPlan on = m.withRollout(Q05, 2, 64, 2048);
        assertEquals(64L * (2L * 24 * 128 * 2048 * 2 + 12L * 151936), on.parts().get("rollout"));
        assertEquals(m.total() + on.parts().get("rollout"), on.total());
    }

    @Test
    void f32HasNoMasterCopyAndTheCpuPlansTheAttentionProbabilities() {
        MemoryPlan gpu = MemoryPlan.of(Q05, 4, 2, 256, 1, MemoryPlan.Kind.LOGPROB, false, 0, true);
        MemoryPlan cpu = MemoryPlan.of(Q05, 4, 2, 256, 1, MemoryPlan.Kind.LOGPROB, false, 0, false);
        assertEquals(0L, gpu.parts().get("master_weights"));
        assertEquals((4L + 12) * 512 * 151936, gpu.parts().get("logits"));
        assertEquals(24L * 14 * 256 * 256 * 2 * 4, cpu.parts().get("activations") - gpu.parts().get("activations"));
        assertTrue(gpu.describe().startsWith(String.format(java.util.Locale.ROOT, "%.2f GiB (student_weights", gpu.total() / (double) MemoryPlan.GIB)));
    }
}
