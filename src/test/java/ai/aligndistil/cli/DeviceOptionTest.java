package ai.aligndistil.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import ai.aligndistil.model.Devices;
import ai.aligndistil.model.MemoryPlan;
import ai.aligndistil.pipeline.data.JsonLines;
import ai.aligndistil.pipeline.stages.Fixture;

/**
 * {@code --device} on every stage that runs a model, through the command line: {@code --device cpu} trains (the
 * device-generic path CI exercises), {@code --device cuda} where CUDA is not usable stops before any work with one line
 * naming the device and the cause and exit code 2, writing nothing; the memory plan refuses a run that will not fit
 * (capacity faked with {@code -Daligndistil.memory.capacity}), exit 2, nothing written.
 */
class DeviceOptionTest {
    @TempDir static Path tmp;
    static Path task;

    record Outcome(int code, String out, String err) {}

    static Outcome main(String... args) {
        ByteArrayOutputStream o = new ByteArrayOutputStream(), e = new ByteArrayOutputStream();
        int code = Main.run(args, new PrintStream(o, true, StandardCharsets.UTF_8), new PrintStream(e, true, StandardCharsets.UTF_8));
        return new Outcome(code, o.toString(StandardCharsets.UTF_8), e.toString(StandardCharsets.UTF_8));
    }

    @BeforeAll
    static void setUp() throws Exception {
        task = Fixture.task(tmp.resolve("task"));
    }

    static String[] stage(String cmd, String out, String... more) {
        List<String> a = new ArrayList<>(List.of(cmd));
        String base = task.resolve("base").toString();
        a.addAll(List.of(Fixture.common(task, "--model", base, "--out", tmp.resolve(out).toString(), "--max-steps", "1", "--lr", "1e-2")));
        if (cmd.equals("distill")) a.addAll(List.of("--dpo", base, "--reverse-dpo", base));
        a.addAll(List.of(more));
        return a.toArray(String[]::new);
    }

    @Test
    void cudaWithoutAUsableGpuStopsEveryStageWithOneLineAndExitCode2() {
        String problem = Devices.cudaProblem(0);
        org.junit.jupiter.api.Assumptions.assumeTrue(problem != null, "CUDA answers here: the refusal cannot be shown");
        String base = task.resolve("base").toString();
        Map<String, String[]> runs = new java.util.LinkedHashMap<>();
        for (String s : new String[] {"sft", "dpo", "distill"}) runs.put(s, stage(s, "cuda-" + s, "--device", "cuda"));
        runs.put("eval", new String[] {"eval", "--config", task.resolve("pipeline.json").toString(), "--models", "a=" + base, "--init", base, "--prompts", task.resolve("eval_prompts.jsonl").toString(),
                "--out", tmp.resolve("cuda-eval").toString(), "--device", "cuda:1"});
        runs.put("demo", new String[] {"demo", "--tiny", "--out", tmp.resolve("cuda-demo").toString(), "--device", "cuda"});
        runs.put("logits", new String[] {"logits", "--model", base, "--ids", "1,2", "--out", tmp.resolve("cuda-logits").toString(), "--device", "cuda"});
        for (var r : runs.entrySet()) {
            Outcome o = main(r.getValue());
            String err = o.err().strip();
            assertEquals(2, o.code(), r.getKey() + ": " + o.err());
            assertEquals(1, err.lines().count(), r.getKey() + ": one line, got: " + o.err());
            assertTrue(err.contains("--device cuda"), r.getKey() + " names the device: " + err);
            assertTrue(err.contains(problem), r.getKey() + " names the cause (" + problem + "): " + err);
            Path out = tmp.resolve("cuda-" + r.getKey());
            assertFalse(Files.exists(out), r.getKey() + " wrote " + out);
        }
    }

    @Test
    void anUnknownDeviceIsAUsageError() {
        Outcome o = main(stage("sft", "bad-device", "--device", "gpu"));
        assertEquals(2, o.code(), o.err());
        assertTrue(o.err().contains("--device must be auto, cpu, cuda or cuda:N, got 'gpu'"), o.err());
        assertFalse(Files.exists(tmp.resolve("bad-device")));
    }

    @Test
    void everyTrainingStageRunsOnDeviceCpuAndLogsItsPeakMemory() throws Exception {
        for (String s : new String[] {"sft", "dpo", "distill"}) {
            Outcome o = main(stage(s, "cpu-" + s, "--device", "cpu"));
            assertEquals(0, o.code(), s + ": " + o.err());
            assertTrue(o.err().contains(s.equals("distill") ? "device cpu; memory plan" : s + ": device cpu; memory plan"), s + ": " + o.err());
            Map<String, Object> m = JsonLines.read(tmp.resolve("cpu-" + s).resolve(s.equals("distill") ? "metrics.jsonl" : "metrics.jsonl")).get(0);
            assertTrue(((Number) m.get("peak_rss_bytes")).longValue() > 1 << 20, s + ": peak RSS recorded: " + m);
        }
        String base = task.resolve("base").toString();
        Outcome e = main("eval", "--config", task.resolve("pipeline.json").toString(), "--models", "a=" + base, "--init", base, "--prompts", task.resolve("eval_prompts.jsonl").toString(), "--samples", "1",
                "--generate-max-len", "4", "--out", tmp.resolve("cpu-eval.json").toString(), "--device", "cpu");
        assertEquals(0, e.code(), e.err());
        Outcome l = main("logits", "--model", base, "--ids", "1,2", "--out", tmp.resolve("cpu-logits.safetensors").toString(), "--device", "cpu");
        assertEquals(0, l.code(), l.err());
    }

    @Test
    void aRunThatWillNotFitStopsBeforeLoadingWithThePlansNumbers() {
        String old = System.getProperty(MemoryPlan.CAPACITY_PROPERTY);
        System.setProperty(MemoryPlan.CAPACITY_PROPERTY, Long.toString(1L << 20)); // 1 MiB: nothing fits
        try {
            for (String s : new String[] {"sft", "dpo", "distill"}) {
                Outcome o = main(stage(s, "oom-" + s, "--device", "cpu"));
                String err = o.err().strip();
                assertEquals(2, o.code(), s + ": " + o.err());
                assertEquals(1, err.lines().count(), s + ": one line: " + err);
                assertTrue(err.contains("memory plan") && err.contains("student_weights") && err.contains("-Daligndistil.memory.capacity 0.00 GiB")
                        && err.contains("will not fit"), s + ": " + err);
                assertFalse(Files.exists(tmp.resolve("oom-" + s)), s + " wrote its output folder");
            }
        } finally {
            if (old == null) System.clearProperty(MemoryPlan.CAPACITY_PROPERTY);
            else System.setProperty(MemoryPlan.CAPACITY_PROPERTY, old);
        }
    }
}
