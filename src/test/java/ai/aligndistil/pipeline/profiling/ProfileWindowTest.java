package ai.aligndistil.pipeline.profiling;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import ai.aligndistil.kernel.NativeCuda;
import ai.aligndistil.pipeline.stages.SftStage;
import ai.aligndistil.pipeline.stages.DpoStage;
import ai.aligndistil.pipeline.stages.DistillStage;
import ai.aligndistil.pipeline.stages.Fixture;

/** --profile-step / --profile-steps: parsing, and that bracketing steps with the CUDA profiler changes nothing else. */
class ProfileWindowTest {
    @TempDir Path tmp;

    private static ProfileWindow parse(String... args) { return ProfileWindow.of(SftStage.spec().parse(args)); }

    @Test
    void aBadWindowIsRefusedBeforeAnyModelLoads() {
        // The model folders do not exist: if the window were checked only when training starts, the error would be
        // about the missing model instead.
        for (String cmd : new String[] {"sft", "dpo", "distill"}) {
            ByteArrayOutputStream err = new ByteArrayOutputStream();
            int rc = ai.aligndistil.cli.Main.run(new String[] {cmd, "--profile-step", "0", "--out", tmp.resolve("o").toString()},
                    new PrintStream(new ByteArrayOutputStream()), new PrintStream(err, true));
            assertEquals(2, rc, cmd + ": " + err);
            assertTrue(err.toString().contains("--profile-step"), cmd + ": " + err);
        }
    }

    @Test
    void parsesOneStepAndARange() {
        assertNull(parse());
        assertEquals(new ProfileWindow(3, 3), parse("--profile-step", "3"));
        assertEquals(new ProfileWindow(2, 5), parse("--profile-steps", "2:5"));
        assertEquals(new ProfileWindow(4, 4), parse("--profile-steps=4:4"));
        ProfileWindow w = parse("--profile-steps", " 2 : 3 ");
        assertTrue(w.contains(2) && w.contains(3) && !w.contains(1) && !w.contains(4), w.toString());
    }

    @Test
    void rejectsBadWindowsNamingTheFlag() {
        String[][] bad = {{"--profile-step", "0"}, {"--profile-step", "-1"}, {"--profile-step", "x"}, {"--profile-steps", "3"},
                {"--profile-steps", "5:2"}, {"--profile-steps", "0:2"}, {"--profile-steps", "1:"}, {"--profile-step", "1", "--profile-steps", "1:2"}};
        for (String[] a : bad) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> parse(a), String.join(" ", a));
            assertTrue(e.getMessage().contains("--profile-step"), "message names the flag: " + e.getMessage());
        }
    }

    @Test
    void rangeNamesAreFamilySlashPhaseAsDocumented() {
        // docs/profiling.md lists these names; Nsight filters (--nvtx-capture, --nvtx-include) depend on them.
        assertEquals("distill/step", StepRanges.DISTILL.step.name());
        assertEquals("distill/forward_student", StepRanges.of("distill").forwardStudent.name());
        assertEquals("dpo/forward_teachers", StepRanges.of("dpo").forwardTeachers.name());
        assertEquals("sft/optimizer_step", StepRanges.SFT.optimizerStep.name());
        assertEquals("distill/rollout", StepRanges.DISTILL.rollout.name());
        assertEquals("sft/backward", StepRanges.of(SftStage.spec().defaults().stage()).backward.name());
        assertEquals("dpo/loss", StepRanges.of(DpoStage.spec().defaults().stage()).loss.name());
        assertEquals("distill/clip", StepRanges.of(DistillStage.spec().defaults().stage()).clip.name());
    }

    @Test
    void profilingAWindowLeavesTrainingUnchanged() throws Exception {
        Path task = Fixture.task(tmp.resolve("task"));
        String base = task.resolve("base").toString();
        ByteArrayOutputStream log = new ByteArrayOutputStream();
        PrintStream err = new PrintStream(log, true, StandardCharsets.UTF_8);
        DpoStage.run(DpoStage.spec().parse(Fixture.common(task, "--model", base, "--out", tmp.resolve("plain").toString(), "--lr", "1e-2")), Fixture.NULL);
        DpoStage.run(DpoStage.spec().parse(Fixture.common(task, "--model", base, "--out", tmp.resolve("prof").toString(), "--lr", "1e-2",
                "--profile-steps", "2:3")), err);
        assertArrayEquals(Files.readAllBytes(tmp.resolve("plain/model.safetensors")), Files.readAllBytes(tmp.resolve("prof/model.safetensors")),
                "the profiled run trains to the same weights");
        String text = log.toString(StandardCharsets.UTF_8);
        // With a GPU the window opens and closes; without one, Nvtx logs once (java.util.logging) and the run says nothing.
        assertEquals(NativeCuda.available(), text.contains("dpo: profiling steps 2..3"), text);
        assertEquals(NativeCuda.available(), text.contains("profiling stopped after step 3"), text);

        log.reset();
        DpoStage.run(DpoStage.spec().parse(Fixture.common(task, "--model", base, "--out", tmp.resolve("far").toString(), "--lr", "1e-2",
                "--max-steps", "1", "--profile-step", "5")), err);
        assertTrue(log.toString(StandardCharsets.UTF_8).contains("step 5 is outside the steps this run takes (1..1)"), log.toString(StandardCharsets.UTF_8));
    }
}
