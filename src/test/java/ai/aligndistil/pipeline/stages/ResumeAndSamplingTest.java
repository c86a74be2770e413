package ai.aligndistil.pipeline.stages;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import ai.aligndistil.model.CausalLM;
import ai.aligndistil.model.ChatTemplate;
import ai.aligndistil.model.HfCheckpoint;
import ai.aligndistil.pipeline.data.JsonLines;

class ResumeAndSamplingTest {
    @TempDir static Path tmp;
    static Path task;

    @BeforeAll
    static void setUp() throws Exception {
        task = Fixture.task(tmp.resolve("task"));
        String base = task.resolve("base").toString();
        // Quick teachers: one DPO step each way is enough for distinct models.
        DpoStage.run(DpoStage.spec().parse(Fixture.common(task, "--model", base, "--out", tmp.resolve("dpo").toString(), "--max-steps", "0", "--lr", "1e-2")), Fixture.NULL);
        DpoStage.run(DpoStage.spec().parse(Fixture.common(task, "--model", base, "--out", tmp.resolve("rev").toString(), "--reverse", "--lr", "1e-2")), Fixture.NULL);
    }

    static String[] distill(String out, String... more) {
        List<String> a = new ArrayList<>(List.of(Fixture.common(task, "--model", task.resolve("base").toString(), "--dpo", tmp.resolve("dpo").toString(),
                "--reverse-dpo", tmp.resolve("rev").toString(), "--mode", "on-policy", "--out", tmp.resolve(out).toString(), "--lr", "1e-2")));
        a.addAll(List.of(more));
        return a.toArray(String[]::new);
    }

    @Test
    void onPolicySamplingIsReproducibleWithASeed() throws Exception {
        CausalLM m = HfCheckpoint.load(task.resolve("base"), ScalarType.Float);
        List<long[]> prompts = List.of(new long[] {1, 5, 9, 10, 2, 1, 6}, new long[] {1, 5, 12, 2, 1, 6});
        List<ChatTemplate.Example> a = Sampler.sample(m, prompts, 10, 1.0, 1.0, 42, 2, 0, 64);
        List<ChatTemplate.Example> b = Sampler.sample(m, prompts, 10, 1.0, 1.0, 42, 2, 0, 64);
        List<ChatTemplate.Example> c = Sampler.sample(m, prompts, 10, 1.0, 1.0, 43, 2, 0, 64);
        boolean differs = false;
        for (int i = 0; i < a.size(); i++) {
            assertArrayEquals(a.get(i).ids(), b.get(i).ids());
            assertEquals(2, a.get(i).ids()[a.get(i).ids().length - 1], "every sampled sequence ends with EOS");
            differs |= !java.util.Arrays.equals(a.get(i).ids(), c.get(i).ids());
        }
        assertTrue(differs, "another seed gives other samples");
        // and two on-policy runs from the same seed train to the same weights
        DistillStage.run(DistillStage.spec().parse(distill("on-a", "--max-steps", "0")), Fixture.NULL);
        DistillStage.run(DistillStage.spec().parse(distill("on-b")), Fixture.NULL);
        assertArrayEquals(Files.readAllBytes(tmp.resolve("on-a/model.safetensors")), Files.readAllBytes(tmp.resolve("on-b/model.safetensors")));
    }

    @Test
    void anInterruptedAndResumedRunMatchesAnUninterruptedOne() throws Exception {
        // 64 train pairs / batch 8 = 8 steps; interrupt after 3 (checkpoint), resume to the end.
        DistillStage.run(DistillStage.spec().parse(distill("full", "--save-steps", "2")), Fixture.NULL);
        DistillStage.run(DistillStage.spec().parse(distill("cut", "--save-steps", "2", "--max-steps", "3")), Fixture.NULL);
        assertTrue(Files.exists(tmp.resolve("cut/checkpoint-000003.safetensors")), "--max-steps writes a checkpoint of its last step");
        assertTrue(Files.exists(tmp.resolve("cut/checkpoint-000002.safetensors")), "the previous checkpoint is kept (--keep-checkpoints 2)");
        assertFalse(Files.exists(tmp.resolve("cut/model.safetensors")));
        DistillStage.run(DistillStage.spec().parse(distill("cut", "--save-steps", "2")), Fixture.NULL);
        assertEquals(List.of(), ai.aligndistil.train.Checkpoints.list(tmp.resolve("cut")), "the finished run removes its checkpoints");
        assertArrayEquals(Files.readAllBytes(tmp.resolve("full/model.safetensors")), Files.readAllBytes(tmp.resolve("cut/model.safetensors")));
        List<Map<String, Object>> a = JsonLines.read(tmp.resolve("full/metrics.jsonl")), b = JsonLines.read(tmp.resolve("cut/metrics.jsonl"));
        assertEquals(a.size(), b.size());
        for (int i = 0; i < a.size(); i++) {
            a.get(i).remove("elapsed_s");
            b.get(i).remove("elapsed_s");
            a.get(i).keySet().removeIf(k -> k.startsWith("peak_")); // memory peaks are measurements, like the time
            b.get(i).keySet().removeIf(k -> k.startsWith("peak_"));
            a.get(i).remove("rss_mb");
            b.get(i).remove("rss_mb");
            assertEquals(a.get(i), b.get(i), "metrics of step " + (i + 1));
        }
    }
}
