package ai.aligndistil.pipeline.demo;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import ai.aligndistil.cli.Main;
import ai.aligndistil.io.Json;
import ai.aligndistil.pipeline.data.JsonLines;
import ai.aligndistil.pipeline.stages.Fixture;

/** Every stage, end to end, through the command line, on a very small version of the built-in task. */
class EndToEndTest {
    @TempDir Path tmp;

    @Test
    @SuppressWarnings("unchecked")
    void theDemoRunsEveryStageAndWritesItsReport() throws Exception {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        Path dir = tmp.resolve("demo");
        int rc = Main.run(new String[] {"demo", "--tiny", "--quiet", "--out", dir.toString()}, new PrintStream(out, true), Fixture.NULL);
        String text = out.toString();
        assertEquals(0, rc, text);
        String[] lines = text.strip().split("\n");
        assertEquals(dir.toAbsolutePath().resolve("report.md").toString(), lines[lines.length - 1]);
        for (String f : new String[] {"report.md", "results.json", "charts/reward_vs_step.png", "charts/reward_vs_kl.png", "task/train_prefs.jsonl"})
            assertTrue(Files.size(dir.resolve(f)) > 0, f);
        Map<String, Object> r = Json.parseObject(Files.readString(dir.resolve("results.json")));
        Map<String, Object> models = (Map<String, Object>) r.get("models");
        for (String m : new String[] {"init", "dpo", "dpo-rev", "gkd-on", "aligndistil-off", "aligndistil-on", "contrast-w1-off", "contrast-w2-off"}) {
            assertTrue(models.containsKey(m), m);
            assertTrue(Files.exists(dir.resolve("models").resolve(m).resolve("model.safetensors")), m);
        }
        assertTrue(r.containsKey("reward_accuracy"));
        assertTrue(text.contains("aligndistil-on"), text);
        String report = Files.readString(dir.resolve("report.md"));
        assertTrue(report.contains("The adaptive weight beats the constant ones"), report);
        // per-step metrics of spec section 5
        Map<String, Object> first = JsonLines.read(dir.resolve("models/aligndistil-on/metrics.jsonl")).get(0);
        for (String k : new String[] {"rlhf_loss", "mean_weight", "expected_reward", "seq_tea_kl", "token_tea_kl", "seq_rev_kl", "response_length", "lr",
                "dpo_model_expected_reward", "reward/kl", "seq_reward", "token_reward", "total_length"})
            assertTrue(first.containsKey(k), k);
        // eval as its own command
        out.reset();
        rc = Main.run(new String[] {"eval", "--config", dir.resolve("task/pipeline.json").toString(), "--models", "a=" + dir.resolve("models/dpo"),
                "--init", dir.resolve("models/init").toString(), "--samples", "1", "--generate-max-len", "6"}, new PrintStream(out, true), Fixture.NULL);
        assertEquals(0, rc);
        assertTrue(out.toString().contains("win vs init"), out.toString());
    }
}
