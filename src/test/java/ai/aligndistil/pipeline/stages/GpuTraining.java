package ai.aligndistil.pipeline.stages;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.global.torch.ScalarType;

import ai.aligndistil.kernel.FusedDistillLoss;
import ai.aligndistil.kernel.LossConfig;
import ai.aligndistil.model.CausalLM;
import ai.aligndistil.model.ChatTemplate;
import ai.aligndistil.model.Devices;
import ai.aligndistil.model.HfCheckpoint;
import ai.aligndistil.model.Tensors;
import ai.aligndistil.pipeline.data.JsonLines;
import ai.aligndistil.pipeline.data.Seqs;

/**
 * The bodies of {@link GpuTrainingTest} (kept apart so that the test class itself loads without the PyTorch presets,
 * as in the kernel-only bundle of benchmarks/gpu/run-gpu-tests.sh). The GPU build on a machine with a GPU (tag {@code gpu}: skipped by CI and wherever CUDA does not answer; run by
 * benchmarks/gpu/gpu-train.sh or {@code ALIGNDISTIL_GPU=1 ./aligndistil test -Dtest=GpuTrainingTest -Dsurefire.excludedGroups=none}):
 * a tiny model's 20-step SFT, DPO and distill loss curves on CUDA f32 against CPU f32 (relative difference per step
 * at most 1e-4), bf16 against f32 on CUDA (at most 5e-2 relative per step: bf16 keeps 8 bits of mantissa, about
 * 4e-3 relative per rounding, and 20 steps of training compound it), and a CUDA distillation step that copies no
 * logits to the host. Never run yet: no GPU was available where it was written.
 */
@SuppressWarnings("try")
final class GpuTraining {
    private GpuTraining() {}

    static Path tmp, task;

    /** Null when CUDA answers, else why not. */
    static String cudaProblem() { return Devices.cudaProblem(0); }

    static void setUp(Path dir) throws Exception {
        tmp = dir;
        task = Fixture.task(tmp.resolve("task"));
        // distinct teachers (one epoch of DPO each way, on the CPU), so the distillation loss is not zero
        String base = task.resolve("base").toString();
        DpoStage.run(DpoStage.spec().parse(Fixture.common(task, "--model", base, "--out", tmp.resolve("teacher-dpo").toString(), "--lr", "1e-2",
                "--device", "cpu")), Fixture.NULL);
        DpoStage.run(DpoStage.spec().parse(Fixture.common(task, "--model", base, "--out", tmp.resolve("teacher-rev").toString(), "--lr", "1e-2",
                "--reverse", "--device", "cpu")), Fixture.NULL);
    }

    static List<Double> losses(String stage, String out, String device, String dtype) throws Exception {
        String base = task.resolve("base").toString();
        List<String> a = new ArrayList<>(List.of(Fixture.common(task, "--model", base, "--out", tmp.resolve(out).toString(), "--lr", "1e-2",
                "--epochs", "4", "--max-steps", "20", "--device", device, "--dtype", dtype)));
        switch (stage) {
            case "sft" -> SftStage.run(SftStage.spec().parse(a.toArray(String[]::new)), Fixture.NULL);
            case "dpo" -> DpoStage.run(DpoStage.spec().parse(a.toArray(String[]::new)), Fixture.NULL);
            default -> {
                a.addAll(List.of("--dpo", tmp.resolve("teacher-dpo").toString(), "--reverse-dpo", tmp.resolve("teacher-rev").toString()));
                DistillStage.run(DistillStage.spec().parse(a.toArray(String[]::new)), Fixture.NULL);
            }
        }
        List<Double> l = new ArrayList<>();
        for (Map<String, Object> m : JsonLines.read(tmp.resolve(out).resolve("metrics.jsonl"))) l.add(((Number) m.get("loss")).doubleValue());
        assertEquals(20, l.size(), stage + " steps");
        return l;
    }

    static void close(String what, List<Double> ref, List<Double> got, double rel) {
        double worst = 0;
        int at = -1;
        for (int i = 0; i < ref.size(); i++) {
            double d = Math.abs(ref.get(i) - got.get(i)) / Math.max(1e-12, Math.abs(ref.get(i)));
            if (d > worst) { worst = d; at = i; }
        }
        assertTrue(worst <= rel, what + ": worst relative difference " + worst + " at step " + (at + 1) + ": " + ref.get(Math.max(0, at)) + " vs "
                + got.get(Math.max(0, at)) + " (bound " + rel + ")");
    }

    static void lossCurvesOnCudaMatchTheCpu() throws Exception {
        for (String s : new String[] {"sft", "dpo", "distill"}) {
            List<Double> cpu = losses(s, s + "-cpu", "cpu", "f32"), cuda = losses(s, s + "-cuda", "cuda", "f32"), bf16 = losses(s, s + "-bf16", "cuda", "bf16");
            close(s + " CUDA f32 vs CPU f32", cpu, cuda, 1e-4);
            close(s + " CUDA bf16 vs CUDA f32", cuda, bf16, 5e-2);
        }
    }

    static void aCudaDistillStepCopiesNoLogitsToTheHost() throws Exception {
        Devices.Choice gpu = Devices.resolve("cuda");
        CausalLM student = HfCheckpoint.load(task.resolve("base"), ScalarType.Float).to(gpu);
        CausalLM teacher = HfCheckpoint.load(tmp.resolve("teacher-dpo"), ScalarType.Float).to(gpu).freeze();
        CausalLM reverse = HfCheckpoint.load(tmp.resolve("teacher-rev"), ScalarType.Float).to(gpu).freeze();
        List<ChatTemplate.Example> ex = List.of(new ChatTemplate.Example(new long[] {1, 5, 9, 10, 2, 7, 3, 8}, 3),
                new ChatTemplate.Example(new long[] {4, 4, 8, 1, 6, 2}, 2));
        Seqs.Packed p = Seqs.pack(ex, 0);
        long v = student.config().vocabSize();
        FusedDistillLoss fused = FusedDistillLoss.create(LossConfig.defaults());
        try (PointerScope s = new PointerScope()) {
            DistillStage.Sums sums = new DistillStage.Sums();
            sums.teacherMetrics = true;
            long before = Tensors.hostCopyBytes();
            double loss = DistillStage.microStep(fused, student, teacher, reverse, p, Seqs.Positions.parse("paper", false), 2, sums);
            long copied = Tensors.hostCopyBytes() - before;
            assertTrue(Double.isFinite(loss) && loss > 0, "loss " + loss);
            long oneLogits = (long) p.rows() * p.width() * v * 4;
            // what may come down: the [B, T] weights and metrics (16 B per row) and per-row teacher metrics (8 B per row)
            assertTrue(copied <= (long) p.rows() * p.width() * 24, "copied " + copied + " bytes to the host; one logits tensor is " + oneLogits);
            assertTrue(student.namedParameters().get("model.embed_tokens.weight").grad().is_cuda(), "gradients stay on the GPU");
        }
    }
}
