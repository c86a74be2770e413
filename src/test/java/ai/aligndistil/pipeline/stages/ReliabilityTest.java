package ai.aligndistil.pipeline.stages;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.lang.foreign.ValueLayout;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import ai.aligndistil.io.Safetensors;
import ai.aligndistil.model.CausalLM;
import ai.aligndistil.model.HfCheckpoint;
import ai.aligndistil.pipeline.config.PipelineException;
import ai.aligndistil.train.AdamW;
import ai.aligndistil.train.Checkpoints;
import ai.aligndistil.train.TrainCheckpoint;

/**
 * The faults of issue 16 on the tiny task, each against an uninterrupted reference run: SIGTERM / SIGINT mid-run
 * (a child JVM, signalled for real), a damaged latest checkpoint, a write past a file-size limit ({@code ulimit -f}
 * in a child JVM), a read-only output folder (only where the test user cannot write it: not as root).
 * Final weights must match the reference to a relative L2 of 1e-6 (f32).
 */
class ReliabilityTest {
    @TempDir static Path tmp;
    static Path task, reference;
    static final double TOL = 1e-6;
    /** 64 train pairs x 3 epochs / batch 8 = 24 optimiser steps. */
    static final int STEPS = 24;

    @BeforeAll
    static void setUp() throws Exception {
        task = Fixture.task(tmp.resolve("task"));
        String base = task.resolve("base").toString();
        DpoStage.run(DpoStage.spec().parse(Fixture.common(task, "--model", base, "--out", tmp.resolve("dpo").toString(), "--max-steps", "0", "--lr", "1e-2")), Fixture.NULL);
        DpoStage.run(DpoStage.spec().parse(Fixture.common(task, "--model", base, "--out", tmp.resolve("rev").toString(), "--reverse", "--lr", "1e-2")), Fixture.NULL);
        reference = tmp.resolve("reference");
        DistillStage.run(DistillStage.spec().parse(distill(reference)), Fixture.NULL);
    }

    /** The distill command of every run here (off-policy, 24 steps, a checkpoint every 2). */
    static String[] distill(Path out, String... more) {
        List<String> a = new ArrayList<>(List.of(Fixture.common(task, "--model", task.resolve("base").toString(), "--dpo", tmp.resolve("dpo").toString(),
                "--reverse-dpo", tmp.resolve("rev").toString(), "--mode", "off-policy", "--out", out.toString(), "--lr", "1e-2",
                "--epochs", "3", "--save-steps", "2")));
        a.addAll(List.of(more));
        return a.toArray(String[]::new);
    }

    // ---- SIGTERM / SIGINT -------------------------------------------------------------------------------------

    @Test
    void sigtermSavesTheStepAndTheSameCommandResumesToTheSameWeights() throws Exception {
        Path out = tmp.resolve("term");
        Process p = child(out.resolveSibling("term.log"), List.of(), distill(out));
        awaitSteps(p, out, 3);
        p.destroy();             // SIGTERM
        Thread.sleep(20);
        p.destroy();             // a second SIGTERM while it finishes the step or writes the checkpoint: harmless
        int rc = waitFor(p, 30);
        String log = Files.readString(out.resolveSibling("term.log"));
        assertEquals(143, rc, "exit status after SIGTERM; output:\n" + log);
        long step = stoppedStep(log, "TERM");
        assertTrue(step >= 3 && step < STEPS, "stopped mid-run, at step " + step + "\n" + log);
        Path ckpt = Checkpoints.file(out, step);
        assertTrue(Files.exists(ckpt), "the checkpoint of the stopped step, " + ckpt + "\n" + log);
        assertTrue(log.contains(ckpt.toString()) && log.contains("resume by running the same command again"), log);
        assertNoTemporaryFiles(out);
        assertEquals(step, loadable(ckpt), "the checkpoint loads and is of the stopped step");

        // the same command again (in this JVM: a second child start would only cost time)
        DistillStage.run(DistillStage.spec().parse(distill(out)), Fixture.NULL);
        assertSameWeights(reference, out);
    }

    @Test
    void sigintSavesAndExits130() throws Exception {
        Assumptions.assumeFalse(sigintIgnored(), "SIGINT is ignored by this test JVM (started in the background), so a child inherits that and cannot be interrupted");
        Path out = tmp.resolve("int");
        Process p = child(out.resolveSibling("int.log"), List.of(), distill(out));
        awaitSteps(p, out, 2);
        assertEquals(0, new ProcessBuilder("kill", "-INT", Long.toString(p.pid())).start().waitFor());
        int rc = waitFor(p, 30);
        String log = Files.readString(out.resolveSibling("int.log"));
        assertEquals(130, rc, "exit status after SIGINT; output:\n" + log);
        long step = stoppedStep(log, "INT");
        assertEquals(step, loadable(Checkpoints.file(out, step)));
        assertNoTemporaryFiles(out);
    }

    // ---- checkpoint rotation and fallback ----------------------------------------------------------------------

    @Test
    void aDamagedLatestCheckpointFallsBackToThePreviousOneAndReachesTheSameWeights() throws Exception {
        Path out = tmp.resolve("damaged");
        DistillStage.run(DistillStage.spec().parse(distill(out, "--max-steps", "5")), Fixture.NULL);
        assertEquals(List.of(Checkpoints.file(out, 5), Checkpoints.file(out, 4)), Checkpoints.list(out), "the newest two are kept (--keep-checkpoints 2)");
        damage(Checkpoints.file(out, 5));
        ByteArrayOutputStream err = new ByteArrayOutputStream();
        DistillStage.run(DistillStage.spec().parse(distill(out)), new PrintStream(err, true, StandardCharsets.UTF_8));
        String log = err.toString(StandardCharsets.UTF_8);
        List<String> warnings = log.lines().filter(l -> l.contains("warning")).toList();
        assertEquals(1, warnings.size(), log);
        String w = warnings.get(0);
        assertTrue(w.contains(Checkpoints.file(out, 5).toString()) && w.contains(Checkpoints.file(out, 4).toString()) && w.contains("checksum mismatch"),
                "one line naming both files and the reason: " + w);
        assertTrue(log.contains("resuming from " + Checkpoints.file(out, 4) + " at step 4/" + STEPS), log);
        assertSameWeights(reference, out);
        assertTrue(Files.exists(out.resolve("checkpoint-000005.safetensors.unreadable")), "the damaged file is kept aside, out of the rotation");
    }

    @Test
    void whenNoCheckpointIsReadableTheRunStopsWithEachReason() throws Exception {
        Path out = tmp.resolve("all-damaged");
        DistillStage.run(DistillStage.spec().parse(distill(out, "--max-steps", "4")), Fixture.NULL);
        damage(Checkpoints.file(out, 4));
        Files.write(Checkpoints.file(out, 2), new byte[] {1, 2, 3}); // truncated
        PipelineException e = assertThrows(PipelineException.class, () -> DistillStage.run(DistillStage.spec().parse(distill(out)), Fixture.NULL));
        assertEquals(1, e.exitCode());
        String m = e.getMessage();
        assertFalse(m.contains("\n"), m);
        assertTrue(m.contains("checkpoint-000004.safetensors: checksum mismatch") && m.contains("checkpoint-000002.safetensors: "), m);
        assertTrue(Files.exists(Checkpoints.file(out, 4)) && Files.exists(Checkpoints.file(out, 2)), "nothing is renamed when nothing could be resumed");
    }

    @Test
    void aSingleCheckpointOfEarlierVersionsStillResumes() throws Exception {
        Path out = tmp.resolve("legacy");
        DistillStage.run(DistillStage.spec().parse(distill(out, "--max-steps", "4", "--keep-checkpoints", "1")), Fixture.NULL);
        assertEquals(List.of(Checkpoints.file(out, 4)), Checkpoints.list(out), "--keep-checkpoints 1 keeps one");
        Files.move(Checkpoints.file(out, 4), out.resolve(Checkpoints.LEGACY));
        ByteArrayOutputStream err = new ByteArrayOutputStream();
        DistillStage.run(DistillStage.spec().parse(distill(out)), new PrintStream(err, true, StandardCharsets.UTF_8));
        assertTrue(err.toString(StandardCharsets.UTF_8).contains("resuming from " + out.resolve(Checkpoints.LEGACY) + " at step 4/"), err.toString(StandardCharsets.UTF_8));
        assertSameWeights(reference, out);
        assertFalse(Files.exists(out.resolve(Checkpoints.LEGACY)), "removed with the others at the end");
    }

    // ---- failed writes -----------------------------------------------------------------------------------------

    @Test
    void aCheckpointWritePastTheFileSizeLimitStopsWithOneLineAndKeepsThePreviousCheckpoint() throws Exception {
        Path out = tmp.resolve("efbig");
        DistillStage.run(DistillStage.spec().parse(distill(out, "--max-steps", "2")), Fixture.NULL);
        Path previous = Checkpoints.file(out, 2);
        long kib = Files.size(previous) / 1024;
        // The JVM ignores SIGXFSZ, so a write past the limit fails with EFBIG ("File too large"). Half a checkpoint:
        // every checkpoint write fails, metrics lines and the JVM's own files (no perf data) stay far below.
        Path logFile = out.resolveSibling("efbig.log");
        Process p = child(logFile, List.of("bash", "-c", "ulimit -f " + (kib / 2) + " && exec \"$@\"", "bash"), distill(out, "--max-steps", "6"));
        int rc = waitFor(p, 120);
        String log = Files.readString(logFile);
        assertEquals(1, rc, log);
        Path failed = Checkpoints.file(out, 4);
        List<String> errors = log.lines().filter(l -> l.startsWith("aligndistil ")).toList();
        assertEquals(1, errors.size(), log);
        assertTrue(errors.get(0).contains("cannot write checkpoint " + failed + ": File too large") && errors.get(0).contains(previous.toString()),
                "one line naming the path, the OS error and the intact checkpoint: " + errors.get(0));
        assertFalse(Files.exists(failed));
        assertNoTemporaryFiles(out);
        assertEquals(List.of(previous), Checkpoints.list(out));
        assertEquals(2, loadable(previous), "the previous checkpoint is intact and loads");
        // and once the limit is gone the same command finishes as if nothing had happened
        DistillStage.run(DistillStage.spec().parse(distill(out)), Fixture.NULL);
        assertSameWeights(reference, out);
    }

    @Test
    void aReadOnlyOutputFolderStopsWithOneLineAndKeepsThePreviousCheckpoint() throws Exception {
        Path out = tmp.resolve("read-only");
        DistillStage.run(DistillStage.spec().parse(distill(out, "--max-steps", "2")), Fixture.NULL);
        Files.setPosixFilePermissions(out, PosixFilePermissions.fromString("r-xr-xr-x"));
        try {
            Path probe = out.resolve("probe");
            try {
                Files.createFile(probe);
                Files.delete(probe);
                Assumptions.abort("the test user can write into a read-only folder (root): the permission case cannot be made to fail here");
            } catch (java.nio.file.AccessDeniedException expected) {
                // a real read-only folder
            }
            PipelineException e = assertThrows(PipelineException.class, () -> DistillStage.run(DistillStage.spec().parse(distill(out, "--max-steps", "4")), Fixture.NULL));
            assertEquals(1, e.exitCode());
            assertTrue(e.getMessage().contains("Permission denied") && e.getMessage().contains(out.toString()), e.getMessage());
            assertEquals(2, loadable(Checkpoints.file(out, 2)));
            assertNoTemporaryFiles(out);
        } finally {
            Files.setPosixFilePermissions(out, PosixFilePermissions.fromString("rwxr-xr-x"));
        }
    }

    // ---- helpers ----------------------------------------------------------------------------------------------

    /** The aligndistil command line in a child JVM (test class path), output to {@code log}; {@code prefix} wraps the java command. */
    static Process child(Path log, List<String> prefix, String... args) throws IOException {
        return child(log, prefix, List.of("-Xmx1g"), args);
    }

    /** As above with the JVM's memory flags. */
    static Process child(Path log, List<String> prefix, List<String> memory, String... args) throws IOException {
        List<String> cmd = new ArrayList<>(prefix);
        cmd.add(Path.of(System.getProperty("java.home"), "bin", "java").toString());
        cmd.add("--enable-native-access=ALL-UNNAMED");
        cmd.add("-XX:-UsePerfData");           // no hsperfdata file (it would count against ulimit -f)
        cmd.addAll(memory);
        cmd.add("-Djava.awt.headless=true");
        String nativeDir = System.getProperty("aligndistil.native.dir");
        if (nativeDir != null) cmd.add("-Daligndistil.native.dir=" + nativeDir);
        cmd.add("-cp");
        cmd.add(System.getProperty("java.class.path"));
        cmd.add("ai.aligndistil.cli.Main");
        cmd.add("distill");
        cmd.addAll(List.of(args));
        return new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(log.toFile()).start();
    }

    /** Waits until the child has completed {@code n} optimiser steps (lines of metrics.jsonl). */
    static void awaitSteps(Process p, Path out, int n) throws Exception {
        Path metrics = out.resolve("metrics.jsonl");
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(120);
        while (System.nanoTime() < deadline) {
            if (!p.isAlive()) fail("the child ended (exit " + p.exitValue() + ") before step " + n);
            if (Files.exists(metrics) && Files.readAllLines(metrics).size() >= n) return;
            Thread.sleep(5);
        }
        p.destroyForcibly();
        fail("no step " + n + " within 120 s");
    }

    static int waitFor(Process p, int seconds) throws InterruptedException {
        if (!p.waitFor(seconds, TimeUnit.SECONDS)) {
            p.destroyForcibly();
            fail("the child did not exit within " + seconds + " s");
        }
        return p.exitValue();
    }

    static long stoppedStep(String log, String signal) {
        Matcher m = Pattern.compile("stopped by SIG" + signal + " after step (\\d+)/" + STEPS).matcher(log);
        assertTrue(m.find(), "the resume line:\n" + log);
        List<String> lines = log.lines().filter(l -> l.startsWith("aligndistil ")).toList();
        assertEquals(1, lines.size(), "one line from the command:\n" + log);
        return Long.parseLong(m.group(1));
    }

    /** Loads a checkpoint into a fresh model; returns its step. */
    static long loadable(Path ckpt) throws IOException {
        CausalLM m = HfCheckpoint.load(task.resolve("base"), ScalarType.Float);
        AdamW opt = new AdamW(m.namedParameters(), AdamW.Options.spec());
        TrainCheckpoint.State st = TrainCheckpoint.load(ckpt, m.namedParameters(), opt);
        return st.step();
    }

    static void assertNoTemporaryFiles(Path out) throws IOException {
        try (var s = Files.list(out)) {
            List<String> tmps = s.map(p -> p.getFileName().toString()).filter(n -> n.contains(".tmp")).toList();
            assertEquals(List.of(), tmps, "temporary files left in " + out);
        }
    }

    /** Flips one byte in the middle of the file's tensor data (the header stays valid, the checksum does not). */
    static void damage(Path file) throws IOException {
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ, StandardOpenOption.WRITE)) {
            long pos = ch.size() * 3 / 4;
            java.nio.ByteBuffer b = java.nio.ByteBuffer.allocate(1);
            ch.read(b, pos);
            b.put(0, (byte) (b.get(0) ^ 0x5a)).rewind();
            ch.write(b, pos);
        }
    }

    /** Every tensor of model.safetensors: ||a - b|| / ||a|| <= 1e-6 over all of them (f32); prints the worst tensor. */
    static void assertSameWeights(Path a, Path b) throws IOException {
        try (Safetensors.Reader ra = Safetensors.open(a.resolve("model.safetensors")); Safetensors.Reader rb = Safetensors.open(b.resolve("model.safetensors"))) {
            assertEquals(ra.tensors().keySet(), rb.tensors().keySet());
            double num = 0, den = 0, worst = 0;
            String worstName = null;
            for (String n : ra.tensors().keySet()) {
                var sa = ra.segment(n);
                var sb = rb.segment(n);
                assertEquals(sa.byteSize(), sb.byteSize(), n);
                double tn = 0, td = 0;
                for (long i = 0; i < sa.byteSize() / 4; i++) {
                    double x = sa.getAtIndex(ValueLayout.JAVA_FLOAT_UNALIGNED, i), y = sb.getAtIndex(ValueLayout.JAVA_FLOAT_UNALIGNED, i);
                    tn += (x - y) * (x - y);
                    td += x * x;
                }
                num += tn;
                den += td;
                double rel = Math.sqrt(tn / Math.max(td, Double.MIN_NORMAL));
                if (rel >= worst) {
                    worst = rel;
                    worstName = n;
                }
            }
            double rel = Math.sqrt(num / den);
            assertNotNull(worstName);
            assertTrue(rel <= TOL, "relative L2 " + rel + " > " + TOL + " (worst tensor " + worstName + ": " + worst + ")");
        }
    }

    /** Whether SIGINT is ignored in this JVM (SigIgn of /proc/self/status, bit 2): children would inherit it. */
    static boolean sigintIgnored() throws IOException {
        Path status = Path.of("/proc/self/status");
        if (!Files.exists(status)) return false;
        for (String l : Files.readAllLines(status))
            if (l.startsWith("SigIgn:")) return (Long.parseUnsignedLong(l.substring(7).trim(), 16) & 2L) != 0;
        return false;
    }
}
