package ai.aligndistil.pipeline.stages;

import java.nio.file.Path;

import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The training stages on a GPU (tag {@code gpu}: skipped by CI and wherever CUDA does not answer; run on a GPU host by
 * benchmarks/gpu/gpu-train.sh): a tiny model's 20-step SFT, DPO and distill loss curves on CUDA f32 against CPU f32
 * (relative difference per step at most 1e-4) and bf16 against f32 on CUDA (at most 5e-2 relative per step: bf16 keeps
 * 8 bits of mantissa, 2^-8 = 3.9e-3 relative per rounding, and 20 optimiser steps compound it), and a CUDA distillation
 * step that copies no logits to the host ({@link GpuTraining} has the bodies). Never run yet: no GPU where it was written.
 */
@Tag("gpu")
class GpuTrainingTest {
    @TempDir static Path tmp;

    @BeforeAll
    static void setUp() throws Exception {
        boolean presets;
        try {
            Class.forName("org.bytedeco.pytorch.global.torch", false, GpuTrainingTest.class.getClassLoader());
            presets = true;
        } catch (ClassNotFoundException e) {
            presets = false;
        }
        Assumptions.assumeTrue(presets, "the PyTorch presets are not on the class path (a kernel-only bundle)");
        String problem = GpuTraining.cudaProblem();
        Assumptions.assumeTrue(problem == null, "CUDA is not usable here: " + problem);
        GpuTraining.setUp(tmp);
    }

    @Test
    void lossCurvesOnCudaMatchTheCpu() throws Exception {
        GpuTraining.lossCurvesOnCudaMatchTheCpu();
    }

    @Test
    void aCudaDistillStepCopiesNoLogitsToTheHost() throws Exception {
        GpuTraining.aCudaDistillStepCopiesNoLogitsToTheHost();
    }
}
