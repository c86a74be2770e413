package ai.aligndistil.cli;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import ai.aligndistil.io.Safetensors;
import ai.aligndistil.model.CausalLM;
import ai.aligndistil.model.HfCheckpoint;
import ai.aligndistil.model.Tensors;
import ai.aligndistil.pipeline.data.JsonLines;
import ai.aligndistil.pipeline.stages.DpoStage;
import ai.aligndistil.pipeline.stages.Fixture;

/**
 * Data-parallel training through the command line: {@code --nproc-per-node 2} starts two worker JVMs (Gloo over a
 * loopback TCPStore) and gives, step by step, the losses of one process with the same global batch; a worker killed
 * with SIGKILL stops the whole command with the rank named, the checkpoint intact, and the same command resumes to the
 * weights of an uninterrupted run. The built-in task's tiny model keeps each run to seconds.
 */
class DataParallelTest {
    @TempDir static Path tmp;
    static Path task;

    /** 64 training pairs, global batch 8, 2 epochs: 16 optimiser steps. */
    static final String[] SHAPE = {"--batch", "8", "--micro-batch", "2", "--epochs", "2", "--lr", "1e-2"};

    @BeforeAll
    static void setUp() throws Exception {
        task = Fixture.task(tmp.resolve("task"));
        String base = task.resolve("base").toString();
        DpoStage.run(DpoStage.spec().parse(Fixture.common(task, "--model", base, "--out", tmp.resolve("dpo").toString(), "--lr", "1e-2")), Fixture.NULL);
        DpoStage.run(DpoStage.spec().parse(Fixture.common(task, "--model", base, "--out", tmp.resolve("rev").toString(), "--reverse", "--lr", "1e-2")), Fixture.NULL);
    }

    record Run(int code, String err, double seconds) {}

    static Run main(String... args) {
        ByteArrayOutputStream err = new ByteArrayOutputStream();
        long t0 = System.nanoTime();
        int code = Main.run(args, Fixture.NULL, new PrintStream(err, true, StandardCharsets.UTF_8));
        return new Run(code, err.toString(StandardCharsets.UTF_8), (System.nanoTime() - t0) / 1e9);
    }

    static String[] args(String cmd, String out, String... more) {
        List<String> a = new ArrayList<>(List.of(cmd));
        a.addAll(List.of(Fixture.common(task, "--model", task.resolve("base").toString(), "--out", tmp.resolve(out).toString())));
        a.addAll(List.of(SHAPE));
        if (cmd.equals("distill")) a.addAll(List.of("--dpo", tmp.resolve("dpo").toString(), "--reverse-dpo", tmp.resolve("rev").toString(), "--mode", "off-policy"));
        a.addAll(List.of(more));
        return a.toArray(String[]::new);
    }

    static void ok(Run r) {
        assertEquals(0, r.code(), r.err());
    }

    @Test
    void dpoOnTwoProcessesMatchesOneProcessStepByStep() throws Exception {
        ok(main(args("dpo", "dpo-1")));
        Run two = main(args("dpo", "dpo-2", "--nproc-per-node", "2"));
        ok(two);
        // two micro-batches per rank: gradients summed by the bucketed all-reduce after backward
        assertTrue(two.err().contains("all-reduced after backward"), two.err());
        compare("dpo-1", "dpo-2");
        // --resume at another world size: 6 steps on two processes, the rest on one, ends where one process ends
        ok(main(args("dpo", "dpo-mixed", "--nproc-per-node", "2", "--save-steps", "2", "--max-steps", "6")));
        Run rest = main(args("dpo", "dpo-mixed"));
        ok(rest);
        assertTrue(rest.err().contains("resuming from"), rest.err());
        double rel = relativeL2(tmp.resolve("dpo-1"), tmp.resolve("dpo-mixed"));
        assertTrue(rel <= 1e-3, "resumed on one process after two: relative L2 difference " + rel);
    }

    @Test
    void ranksStartedWithDifferentOptionsAreRejectedBeforeTraining() throws Exception {
        int port;
        try (java.net.ServerSocket s = new java.net.ServerSocket(0, 0, java.net.InetAddress.getLoopbackAddress())) {
            port = s.getLocalPort();
        }
        List<CompletableFuture<Throwable>> ranks = new ArrayList<>();
        for (int r = 0; r < 2; r++) {
            int rank = r;
            Map<String, String> env = Map.of("WORLD_SIZE", "2", "RANK", "" + rank, "LOCAL_RANK", "" + rank, "MASTER_ADDR", "127.0.0.1", "MASTER_PORT", "" + port);
            String[] a = args("dpo", "mismatch-" + rank, "--lr", rank == 0 ? "1e-2" : "2e-2", "--dist-timeout", "60");
            String[] stageArgs = java.util.Arrays.copyOfRange(a, 1, a.length);
            ranks.add(CompletableFuture.supplyAsync(() -> {
                try {
                    PipelineCommands.train("dpo", DpoStage.spec(), stageArgs, Fixture.NULL, Fixture.NULL, (o, g) -> DpoStage.run(o, Fixture.NULL, g).toString(), env);
                    return null;
                } catch (Throwable t) {
                    return t;
                }
            }, java.util.concurrent.Executors.newSingleThreadExecutor()));
        }
        for (CompletableFuture<Throwable> f : ranks) {
            Throwable t = f.get(120, TimeUnit.SECONDS);
            assertTrue(t instanceof ai.aligndistil.train.dist.DistException d && d.usage(), "a usage error (exit code 2), got " + t);
            assertTrue(t.getMessage().contains("ranks differ in options"), t.getMessage());
        }
        assertFalse(Files.exists(tmp.resolve("mismatch-0").resolve("metrics.jsonl")), "no step was taken");
    }

    @Test
    void offPolicyDistillOnTwoProcessesMatchesOneProcessStepByStep() throws Exception {
        // one micro-batch of 4 per rank: gradients through libtorch's DDP Reducer (--dist-sync auto)
        ok(main(args("distill", "off-1", "--micro-batch", "4")));
        Run two = main(args("distill", "off-2", "--nproc-per-node", "2", "--micro-batch", "4"));
        ok(two);
        assertTrue(two.err().contains("libtorch's DDP Reducer"), two.err());
        compare("off-1", "off-2");
    }

    /** Per-step loss: |a - b| <= 1e-4 max(|a|, |b|) over at least 12 steps; final weights: ||a - b|| <= 1e-3 ||a||. */
    static void compare(String one, String two) throws Exception {
        List<Map<String, Object>> a = JsonLines.read(tmp.resolve(one).resolve("metrics.jsonl")), b = JsonLines.read(tmp.resolve(two).resolve("metrics.jsonl"));
        assertEquals(a.size(), b.size(), "steps");
        assertTrue(a.size() >= 12, "at least 12 steps, got " + a.size());
        double worst = 0;
        int worstStep = -1;
        for (int i = 0; i < a.size(); i++) {
            double x = ((Number) a.get(i).get("loss")).doubleValue(), y = ((Number) b.get(i).get("loss")).doubleValue();
            double rel = Math.abs(x - y) / Math.max(Math.max(Math.abs(x), Math.abs(y)), 1e-12);
            if (rel > worst) {
                worst = rel;
                worstStep = i + 1;
            }
            assertTrue(b.get(i).containsKey("comm_s"), "the two-process run reports its time in collectives");
        }
        assertTrue(worst <= 1e-4, "worst step " + worstStep + ": relative loss difference " + worst + " (" + a.get(Math.max(0, worstStep - 1)).get("loss")
                + " vs " + b.get(Math.max(0, worstStep - 1)).get("loss") + ")");
        double rel = relativeL2(tmp.resolve(one), tmp.resolve(two));
        System.err.printf("DataParallelTest: %s vs %s: %d steps, worst relative loss difference %.3g (step %d), final weights relative L2 %.3g%n",
                one, two, a.size(), worst, worstStep, rel);
        assertTrue(rel <= 1e-3, "final weights: relative L2 difference " + rel);
    }

    static double relativeL2(Path a, Path b) throws Exception {
        CausalLM x = HfCheckpoint.load(a, ScalarType.Float), y = HfCheckpoint.load(b, ScalarType.Float);
        double d = 0, n = 0;
        for (var e : x.namedParameters().entrySet()) {
            float[] u = Tensors.toFloats(e.getValue()), v = Tensors.toFloats(y.namedParameters().get(e.getKey()));
            for (int i = 0; i < u.length; i++) {
                d += (u[i] - (double) v[i]) * (u[i] - (double) v[i]);
                n += (double) u[i] * u[i];
            }
        }
        return Math.sqrt(d) / Math.sqrt(n);
    }

    @Test
    void aWorkerKilledMidRunStopsTheCommandAndTheSameCommandResumes() throws Exception {
        String[] cmd = args("distill", "killed", "--nproc-per-node", "2", "--save-steps", "2", "--epochs", "3", "--dist-timeout", "60");
        ok(main(args("distill", "whole", "--nproc-per-node", "2", "--save-steps", "2", "--epochs", "3", "--dist-timeout", "60")));
        Path out = tmp.resolve("killed");
        CompletableFuture<Run> job = CompletableFuture.supplyAsync(() -> main(cmd));
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(120);
        while (newestCheckpoint(out) == null && !job.isDone() && System.nanoTime() < deadline) Thread.sleep(10);
        Path ckpt = newestCheckpoint(out);
        assertTrue(ckpt != null, "a checkpoint appeared before the run ended");
        ProcessHandle rank1 = ProcessHandle.current().children().filter(p -> commandLine(p).contains("-Daligndistil.dist.rank=1")).findFirst()
                .orElseThrow(() -> new AssertionError("no worker of rank 1 among " + ProcessHandle.current().children().map(DataParallelTest::commandLine).toList()
                        + (job.isDone() ? "; the run had already ended: " + job.join().err() : "")));
        long killedAt = System.nanoTime();
        assertTrue(rank1.destroyForcibly(), "SIGKILL sent to rank 1");
        Run r = job.get(180, TimeUnit.SECONDS);
        double stopSeconds = (System.nanoTime() - killedAt) / 1e9;
        assertNotEquals(0, r.code(), r.err());
        assertTrue(r.err().contains("rank 1 of 2 failed: killed by signal 9"), r.err());
        assertTrue(stopSeconds < 60, "stopped " + stopSeconds + " s after the kill, beyond --dist-timeout 60");
        assertFalse(Files.exists(out.resolve("model.safetensors")), "the killed run did not finish");
        try (Safetensors.Reader ck = Safetensors.open(ckpt)) {
            assertTrue(ck.tensors().size() > 0, "the checkpoint is readable");
        }
        Run resumed = main(cmd);
        ok(resumed);
        assertTrue(resumed.err().contains("resuming from"), resumed.err());
        assertArrayEquals(Files.readAllBytes(tmp.resolve("whole/model.safetensors")), Files.readAllBytes(out.resolve("model.safetensors")),
                "the resumed run ends on the uninterrupted run's weights");
    }

    /** The newest checkpoint-STEP.safetensors of a run folder, or null. */
    static Path newestCheckpoint(Path out) throws IOException {
        if (!Files.isDirectory(out)) return null;
        try (var s = Files.list(out)) {
            return s.filter(p -> p.getFileName().toString().matches("checkpoint-\\d+\\.safetensors")).max(java.util.Comparator.naturalOrder()).orElse(null);
        }
    }

    /** A process's command line: /proc/PID/cmdline (whole, however long the class path), else what the JDK reports. */
    static String commandLine(ProcessHandle p) {
        try {
            return new String(Files.readAllBytes(Path.of("/proc", Long.toString(p.pid()), "cmdline")), StandardCharsets.UTF_8).replace('\0', ' ');
        } catch (IOException | RuntimeException e) {
            return p.info().commandLine().orElse("");
        }
    }

    @Test
    @SuppressWarnings("unchecked")
    void evalOnTwoProcessesSplitsPromptsAndPairsAndAddsTheirSums() throws Exception {
        List<String> common = List.of("--models", "dpo=" + tmp.resolve("dpo"), "--init", task.resolve("base").toString(), "--dpo", tmp.resolve("dpo").toString(),
                "--reverse-dpo", tmp.resolve("rev").toString(), "--pairs", task.resolve("test_prefs.jsonl").toString(), "--prompts",
                task.resolve("eval_prompts.jsonl").toString(), "--task", task.toString(), "--samples", "2", "--generate-max-len", "6");
        List<String> one = new ArrayList<>(List.of("eval")), two = new ArrayList<>(List.of("eval"));
        one.addAll(common);
        one.addAll(List.of("--out", tmp.resolve("eval-1.json").toString()));
        two.addAll(common);
        two.addAll(List.of("--out", tmp.resolve("eval-2.json").toString(), "--nproc-per-node", "2"));
        ok(main(one.toArray(String[]::new)));
        ok(main(two.toArray(String[]::new)));
        Map<String, Object> a = ai.aligndistil.io.Json.parseObject(Files.readString(tmp.resolve("eval-1.json")));
        Map<String, Object> b = ai.aligndistil.io.Json.parseObject(Files.readString(tmp.resolve("eval-2.json")));
        Map<String, Object> ma = (Map<String, Object>) ((Map<String, Object>) a.get("models")).get("dpo");
        Map<String, Object> mb = (Map<String, Object>) ((Map<String, Object>) b.get("models")).get("dpo");
        assertEquals(((Number) ma.get("samples")).intValue(), ((Number) mb.get("samples")).intValue(), "every prompt sampled once per sample, over both ranks");
        for (String k : List.of("reward", "win_rate", "kl_init", "kl_dpo", "length")) assertTrue(Double.isFinite(((Number) mb.get(k)).doubleValue()), k + " " + mb);
        // reward accuracy has no sampling: both ranks' counts add up to the single-process ones
        assertEquals(a.get("reward_accuracy"), b.get("reward_accuracy"));
    }

    @Test
    void aLauncherPortInUseIsRejectedBeforeAnyWorkerStarts() throws Exception {
        try (java.net.ServerSocket busy = new java.net.ServerSocket(0, 0, java.net.InetAddress.getByName("127.0.0.1"))) {
            CliException e = org.junit.jupiter.api.Assertions.assertThrows(CliException.class, () -> Launcher.launch("dpo", new String[0], 2,
                    java.time.Duration.ofSeconds(5), null, Map.of("MASTER_PORT", Integer.toString(busy.getLocalPort())), Fixture.NULL, Fixture.NULL));
            assertEquals(CliException.USAGE, e.exitCode());
            assertTrue(e.getMessage().contains("already in use"), e.getMessage());
        }
    }

    @Test
    void aWorldSizeThatDoesNotDivideTheBatchIsRejectedBeforeAnythingStarts() {
        Run r = main(args("dpo", "bad", "--nproc-per-node", "3"));
        assertEquals(CliException.USAGE, r.code(), r.err());
        assertTrue(r.err().contains("--batch 8 is not divisible by the world size 3"), r.err());
        assertEquals(1, r.err().strip().lines().count(), r.err());
    }
}
