package ai.aligndistil.pipeline.stages;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import ai.aligndistil.bench.Soak;
import ai.aligndistil.pipeline.data.JsonLines;

/**
 * The CI version of benchmarks/soak.sh: 100 off-policy AlignDistil steps on the tiny task in a child JVM with a
 * fixed, pre-touched heap (as the soak script runs), resident memory every 10 steps, growth after the warm-up
 * (the first 30 steps: JIT, allocator arenas and libtorch's caches settle there) under the soak's bound of 2 %.
 */
class SoakTest {
    @TempDir static Path tmp;
    static final int STEPS = 100, EVERY = 10, WARMUP = 30;
    static final double BOUND_PCT = 2.0;

    @Test
    void residentMemoryIsFlatOver100OptimiserSteps() throws Exception {
        Path task = Fixture.task(tmp.resolve("task"));
        String base = task.resolve("base").toString();
        DpoStage.run(DpoStage.spec().parse(Fixture.common(task, "--model", base, "--out", tmp.resolve("dpo").toString(), "--lr", "1e-2")), Fixture.NULL);
        DpoStage.run(DpoStage.spec().parse(Fixture.common(task, "--model", base, "--out", tmp.resolve("rev").toString(), "--reverse", "--lr", "1e-2")), Fixture.NULL);
        Path out = tmp.resolve("soak");
        // 64 pairs / batch 8 = 8 steps an epoch; 13 epochs, stopped at 100 (a checkpoint every 25 steps, curve every 10).
        List<String> a = new ArrayList<>(List.of(Fixture.common(task, "--model", base, "--dpo", tmp.resolve("dpo").toString(), "--reverse-dpo",
                tmp.resolve("rev").toString(), "--mode", "off-policy", "--out", out.toString(), "--lr", "1e-3", "--epochs", "13",
                "--max-steps", Integer.toString(STEPS), "--save-steps", "25", "--eval-every", "10")));
        Path log = tmp.resolve("soak.log");
        Process p = ReliabilityTest.child(log, List.of(), List.of("-Xms256m", "-Xmx256m", "-XX:+AlwaysPreTouch"), a.toArray(String[]::new));
        assertEquals(0, ReliabilityTest.waitFor(p, 300), Files.readString(log));
        Soak.Run r = Soak.analyse("off-policy", JsonLines.read(out.resolve("metrics.jsonl")), EVERY, WARMUP);
        assertEquals(STEPS, r.steps());
        StringBuilder b = new StringBuilder();
        for (int i = 0; i < r.samples().size(); i++) b.append(r.samples().get(i)[0]).append(": ").append(r.rssMb().get(i)).append(" MiB\n");
        assertTrue(r.growthPct() < BOUND_PCT, String.format("RSS grew %.2f %% after step %d (bound %.1f %%):%n%s", r.growthPct(), WARMUP, BOUND_PCT, b));
    }
}
