package ai.aligndistil.pipeline.stages;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import ai.aligndistil.kernel.FusedDistillLoss;
import ai.aligndistil.kernel.LossConfig;
import ai.aligndistil.kernel.Variant;
import ai.aligndistil.model.CausalLM;
import ai.aligndistil.model.ChatTemplate;
import ai.aligndistil.model.ChunkedFusedLinearLoss;
import ai.aligndistil.model.ModelConfig;
import ai.aligndistil.model.Tensors;
import ai.aligndistil.model.TinyModels;
import ai.aligndistil.pipeline.data.JsonLines;
import ai.aligndistil.pipeline.data.Seqs;

/**
 * {@code distill --fused-linear}: the micro-step through {@link ChunkedFusedLinearLoss} (hidden states, chunked heads,
 * hidden.backward(dX), dW added into the head's or the tied embedding's grad) gives the same parameter gradients,
 * loss and metrics as the unfused micro-step, and a whole optimiser step through the stage logs the same loss,
 * metrics and gradient norm.
 */
class FusedLinearStepTest {
    static final int V = 37;

    /**
     * Tolerance as DistillGradientTest's (fused kernel vs autograd): |a - b| <= 1e-5 + 1e-4 |b|, the kernel's f32
     * gradient bound (1e-4 relative, kernel/Compare.java) carried through the same f32 backward; here both
     * sides use the same kernel, so the only differences are the chunked matmuls' summation order and where
     * the per-row scale is applied (a few f32 ulps).
     */
    @ParameterizedTest
    @CsvSource({"aligndistil,qwen2,4", "aligndistil,llama,3", "contrast,qwen2,64", "adaptive,llama,5", "theorem1,qwen2,1", "gkd,llama,7"})
    void fusedLinearMicroStepsMatchUnfused(String variant, String arch, int chunk) {
        Variant v = Variant.parse(variant);
        LossConfig cfg = new LossConfig(v, 0.1, 10, 1e-3, 1.0, 1.0, true);
        ModelConfig mc = arch.equals("qwen2") ? TinyModels.qwen2(V, 1) : TinyModels.llama(V, 1);
        CausalLM student = TinyModels.random(mc, 1, ScalarType.Float);
        CausalLM dpo = TinyModels.random(mc, 2, ScalarType.Float).freeze();
        CausalLM second = v == Variant.GKD ? null : TinyModels.random(mc, 3, ScalarType.Float).freeze();
        List<ChatTemplate.Example> all = DistillGradientTest.batch();
        // Two micro-batches accumulate into one optimiser batch of 3 sequences.
        List<Seqs.Packed> micros = List.of(Seqs.pack(all.subList(0, 2), 0), Seqs.pack(all.subList(2, 3), 0));
        Map<String, float[]> plain = new LinkedHashMap<>(), fused = new LinkedHashMap<>();
        DistillStage.Sums sp = new DistillStage.Sums(), sf = new DistillStage.Sums();
        sp.teacherMetrics = sf.teacherMetrics = second != null;
        try (PointerScope s = new PointerScope(); ChunkedFusedLinearLoss fl = new ChunkedFusedLinearLoss(cfg, chunk)) {
            student.zeroGrad();
            for (Seqs.Packed p : micros) DistillStage.microStep(FusedDistillLoss.create(cfg), student, dpo, second, p, Seqs.Positions.PAPER, 3, sp);
            for (var e : student.namedParameters().entrySet()) plain.put(e.getKey(), Tensors.toFloats(e.getValue().grad()));
            student.zeroGrad();
            for (Seqs.Packed p : micros) DistillStage.microStepFusedLinear(fl, student, dpo, second, p, Seqs.Positions.PAPER, 3, sf);
            for (var e : student.namedParameters().entrySet()) fused.put(e.getKey(), Tensors.toFloats(e.getValue().grad()));
        }
        String head = mc.tieWordEmbeddings() ? "model.embed_tokens.weight" : "lm_head.weight";
        assertTrue(fused.containsKey(head), head);
        double maxAbs = 0;
        List<String> bad = new ArrayList<>();
        for (String k : plain.keySet()) {
            float[] a = fused.get(k), b = plain.get(k);
            for (int i = 0; i < a.length; i++) {
                maxAbs = Math.max(maxAbs, Math.abs(b[i]));
                double tol = 1e-5 + 1e-4 * Math.abs(b[i]);
                if (!(Math.abs(a[i] - b[i]) <= tol) && bad.size() < 5) bad.add(k + "[" + i + "]: fused " + a[i] + ", unfused " + b[i] + ", tol " + tol);
            }
        }
        assertTrue(bad.isEmpty(), "gradients differ:\n" + String.join("\n", bad));
        assertTrue(maxAbs > 1e-4, "gradients are not trivially zero: " + maxAbs);
        // Scalar sums: the kernel's scalar bound 1e-5 relative (above 1) / absolute (below).
        double[][] pairs = {{sp.loss, sf.loss}, {sp.weight, sf.weight}, {sp.reward, sf.reward}, {sp.klTea, sf.klTea}, {sp.klSecond, sf.klSecond},
                {sp.teacherReward, sf.teacherReward}, {sp.seqReward, sf.seqReward}, {sp.tokenReward, sf.tokenReward}};
        for (int i = 0; i < pairs.length; i++) assertEquals(pairs[i][0], pairs[i][1], 1e-5 * Math.max(1, Math.abs(pairs[i][0])), "sum " + i);
        assertEquals(sp.sequences, sf.sequences);
        assertEquals(sp.rows, sf.rows);
        if (second != null) assertTrue(Math.abs(sp.teacherReward) > 0, "teacher metrics were computed");
    }

    /** One optimiser step of the stage, with and without --fused-linear: same logged loss, metrics and gradient norm. */
    @Test
    void stageStepWithFusedLinearLogsTheSameStep(@TempDir Path tmp) throws Exception {
        Path task = Fixture.task(tmp.resolve("task"));
        String base = task.resolve("base").toString();
        DpoStage.run(DpoStage.spec().parse(Fixture.common(task, "--model", base, "--out", tmp.resolve("dpo").toString(), "--lr", "1e-2")), Fixture.NULL);
        Map<String, Object> plain = step(task, tmp, "plain"), fused = step(task, tmp, "fused", "--fused-linear", "--fused-linear-chunk", "5");
        for (String k : new String[] {"loss", "mean_weight", "expected_reward", "seq_tea_kl", "seq_rev_kl", "dpo_model_expected_reward", "grad_norm"}) {
            double a = ((Number) plain.get(k)).doubleValue(), b = ((Number) fused.get(k)).doubleValue();
            // 1e-5 relative: the kernel's scalar bound; grad_norm is a norm of gradients within 1e-4 relative each.
            double tol = (k.equals("grad_norm") ? 1e-4 : 1e-5) * Math.max(1, Math.abs(a));
            assertEquals(a, b, tol, k);
        }
        assertTrue(((Number) plain.get("grad_norm")).doubleValue() > 0);
    }

    private static Map<String, Object> step(Path task, Path tmp, String out, String... more) throws Exception {
        List<String> a = new ArrayList<>(List.of(Fixture.common(task, "--model", task.resolve("base").toString(), "--dpo", tmp.resolve("dpo").toString(),
                "--reverse-dpo", task.resolve("base").toString(), "--out", tmp.resolve(out).toString(), "--lr", "1e-2", "--max-steps", "1")));
        a.addAll(List.of(more));
        DistillStage.run(DistillStage.spec().parse(a.toArray(String[]::new)), Fixture.NULL);
        return JsonLines.read(tmp.resolve(out).resolve("metrics.jsonl")).get(0);
    }
}
