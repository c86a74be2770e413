package ai.aligndistil.pipeline.stages;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.List;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;

import ai.aligndistil.io.DType;
import ai.aligndistil.model.CausalLM;
import ai.aligndistil.model.ChatTemplate;
import ai.aligndistil.model.ModelConfig;
import ai.aligndistil.model.Tensors;
import ai.aligndistil.model.TinyModels;
import ai.aligndistil.pipeline.data.Seqs;

/**
 * The parts of the distillation step that the CUDA path uses instead of host code, run on the CPU: the teacher
 * metrics as libtorch operations (no host copy of logits on a GPU) against the Java form over the same logits.
 */
@SuppressWarnings("try")
class DeviceGenericDistillTest {
    @Test
    void teacherMetricsAsTensorOperationsEqualTheJavaForm() {
        ModelConfig c = TinyModels.qwen2(50, 2);
        CausalLM d = TinyModels.random(c, 3, ScalarType.Float), r = TinyModels.random(c, 4, ScalarType.Float);
        List<ChatTemplate.Example> ex = List.of(new ChatTemplate.Example(new long[] {1, 5, 9, 10, 2, 7, 3, 8}, 3),
                new ChatTemplate.Example(new long[] {4, 4, 8, 1, 30, 6}, 2));
        Seqs.Packed p = Seqs.pack(ex, 0);
        long b = p.rows(), t = p.width();
        try (PointerScope s = new PointerScope(); Arena arena = Arena.ofConfined()) {
            Tensor zd = d.forwardInference(p.ids(), null).contiguous(), zr = r.forwardInference(p.ids(), null).contiguous();
            MemorySegment mask = arena.allocate(b * t);
            int[] n = Seqs.distillMask(p, Seqs.Positions.parse("paper", false), mask);
            DistillStage.Sums java = new DistillStage.Sums(), tensors = new DistillStage.Sums();
            DistillStage.teacherMetrics(0.1, p, mask, Tensors.segment(zd), DType.F32, Tensors.segment(zr), DType.F32, zd.size(2), n, java);
            DistillStage.teacherMetricsTensors(0.1, p, mask, zd, zr, n, tensors);
            // the same in chunks of 5 rows that cut sequences apart (as the fused-linear listener and METRIC_ROWS do)
            DistillStage.Sums chunked = new DistillStage.Sums();
            double[] seqTea = new double[(int) b], seqTok = new double[(int) b];
            int[] tokRows = new int[(int) b];
            long[] ids = Tensors.toLongs(p.ids());
            Tensor fd = zd.reshape(b * t, zd.size(2)), fr = zr.reshape(b * t, zr.size(2));
            for (long r0 = 0; r0 < b * t; r0 += 5) {
                long rows = Math.min(5, b * t - r0);
                DistillStage.teacherRowMetricsTensors(0.1, p, ids, mask, fd.narrow(0, r0, rows), fr.narrow(0, r0, rows), r0, seqTea, seqTok, tokRows);
            }
            DistillStage.addTeacherSums(n, seqTea, seqTok, tokRows, chunked);
            for (DistillStage.Sums x : new DistillStage.Sums[] {tensors, chunked}) {
                double[][] pairs = {{java.teacherReward, x.teacherReward}, {java.seqReward, x.seqReward}, {java.tokenReward, x.tokenReward}};
                for (int i = 0; i < pairs.length; i++) {
                    // f64 Java sums vs f32 log-softmax: |a - b| <= 1e-5 (1 + |a|)
                    assertEquals(pairs[i][0], pairs[i][1], 1e-5 * (1 + Math.abs(pairs[i][0])), "sum " + i);
                }
            }
            assertTrue(Math.abs(java.teacherReward) > 0 && Math.abs(java.seqReward) > 0, "non-trivial metrics");
        }
    }
}
