package ai.aligndistil.pipeline.demo;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
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
        for (String f : new String[] {"report.md", "results.json", "charts/frontier.png", "seed-1/charts/reward_vs_step.png", "seed-1/task/train_prefs.jsonl"})
            assertTrue(Files.size(dir.resolve(f)) > 0, f);
        Map<String, Object> r = Json.parseObject(Files.readString(dir.resolve("results.json")));
        assertEquals(List.of(1.0), ((List<Object>) r.get("seeds")).stream().map(o -> ((Number) o).doubleValue()).toList(), "--tiny keeps one seed");
        Map<String, Object> seed = (Map<String, Object>) ((Map<String, Object>) r.get("per_seed")).get("1");
        Map<String, Object> agg = (Map<String, Object>) r.get("aggregate");
        String[] regimeKeys = {"beta2", "mean_alpha", "alpha_p10", "alpha_p90", "tvd_mean", "kl_dpo_init_per_token", "teacher_eos_first_row", "in_regime"};
        for (String run : new String[] {"aligndistil-off", "aligndistil-on", "aligndistil-off-official-pos", "aligndistil-on-official-pos"}) {
            for (Map<String, Object> where : List.of((Map<String, Object>) ((Map<String, Object>) seed.get("runs")).get(run),
                    (Map<String, Object>) ((Map<String, Object>) agg.get("runs")).get(run))) {
                Map<String, Object> g = (Map<String, Object>) where.get("regime");
                for (String k : regimeKeys) {
                    assertTrue(g.containsKey(k), run + ": " + k);
                    assertTrue(g.get(k) instanceof Number || g.get(k) instanceof Boolean, run + ": " + k + " = " + g.get(k));
                }
                assertTrue(g.get("in_regime") instanceof Boolean, run);
                List<Object> front = (List<Object>) where.get("frontier");
                assertTrue(front.size() >= 2, run + ": frontier points");
                Map<String, Object> p = (Map<String, Object>) front.get(front.size() - 1);
                for (String k : new String[] {"step", "kl_init", "reward"}) assertTrue(p.get(k) instanceof Number, run + " frontier " + k);
            }
        }
        assertTrue(((Map<String, Object>) ((Map<String, Object>) agg.get("runs")).get("aligndistil-off")).get("regime") instanceof Map<?, ?> g
                && g.containsKey("mean_alpha_se"), "aggregates carry _se siblings");
        for (String run : new String[] {"dpo", "gkd-on", "contrast-w1-off", "contrast-w2-off"})
            assertTrue(((Map<String, Object>) seed.get("runs")).containsKey(run), run);
        List<Map<String, Object>> claims = (List<Map<String, Object>>) r.get("claims");
        assertTrue(claims.size() >= 6);
        List<String> verdicts = List.of("HELD", "DID NOT HOLD", "NOT DISTINGUISHABLE", "NOT TESTABLE", "OUT OF REGIME");
        for (Map<String, Object> c : claims) {
            for (String k : new String[] {"claim", "verdict", "mean", "se"}) assertTrue(c.containsKey(k), k);
            assertTrue(verdicts.contains(c.get("verdict")), c.toString());
            // One seed: never HELD or DID NOT HOLD.
            assertTrue(!c.get("verdict").equals("HELD") && !c.get("verdict").equals("DID NOT HOLD"), c.toString());
        }
        Map<String, Object> models = (Map<String, Object>) seed.get("models");
        for (String m : new String[] {"init", "dpo", "dpo-rev", "gkd-on", "aligndistil-off", "aligndistil-on", "contrast-w1-off", "contrast-w2-off"}) {
            assertTrue(models.containsKey(m), m);
            assertTrue(((Map<String, Object>) models.get(m)).containsKey("reward_per_word"), m);
            assertTrue(Files.exists(dir.resolve("seed-1/models").resolve(m).resolve("model.safetensors")), m);
        }
        assertTrue(seed.containsKey("reward_accuracy"));
        assertTrue(text.contains("[seed 1, 1/1] aligndistil-on"), text);
        String report = Files.readString(dir.resolve("report.md"));
        int regime = report.indexOf("## Regime"), chart = report.indexOf("charts/frontier.png"), claimsAt = report.indexOf("## The paper's claims");
        assertTrue(regime >= 0 && regime < chart && chart < claimsAt, "report order: regime table, frontier chart, claims");
        assertTrue(report.contains("(d) the adaptive weight"), report);
        // per-step metrics of spec section 5
        Map<String, Object> first = JsonLines.read(dir.resolve("seed-1/models/aligndistil-on/metrics.jsonl")).get(0);
        for (String k : new String[] {"rlhf_loss", "mean_weight", "expected_reward", "seq_tea_kl", "token_tea_kl", "seq_rev_kl", "response_length", "lr",
                "dpo_model_expected_reward", "reward/kl", "seq_reward", "token_reward", "total_length"})
            assertTrue(first.containsKey(k), k);
        // eval as its own command
        out.reset();
        rc = Main.run(new String[] {"eval", "--config", dir.resolve("seed-1/task/pipeline.json").toString(), "--models", "a=" + dir.resolve("seed-1/models/dpo"),
                "--init", dir.resolve("seed-1/models/init").toString(), "--samples", "1", "--generate-max-len", "6"}, new PrintStream(out, true), Fixture.NULL);
        assertEquals(0, rc);
        assertTrue(out.toString().contains("win vs init"), out.toString());
    }
}
