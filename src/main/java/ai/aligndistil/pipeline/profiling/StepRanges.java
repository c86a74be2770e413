package ai.aligndistil.pipeline.profiling;

import java.util.Map;

import ai.aligndistil.kernel.Nvtx;
import ai.aligndistil.pipeline.config.Options;

/**
 * The NVTX ranges of a training step, one set per stage family, named {@code <family>/<phase>} (family
 * {@code sft}, {@code dpo} or {@code distill}, whatever the mode, variant or {@code --reverse}):
 *
 * <pre>
 *   step              one optimiser step (everything below nests inside it)
 *   rollout           on-policy sampling of the step's responses (distill on-policy only)
 *   forward_student   the policy's forward pass with autograd (per micro-batch)
 *   forward_teachers  the frozen models' forward passes (DPO + second teacher, or DPO's reference)
 *   loss              the loss on the logits (distill: the fused kernel, whose launch nests fused_distill_loss on CUDA)
 *   backward          autograd from the loss into the parameters
 *   metrics           teacher-side metrics computed in Java (distill with a second teacher)
 *   clip              global-norm gradient clipping
 *   optimizer_step    AdamW
 *   checkpoint        the atomic run checkpoint (every --save-steps)
 *   eval              a training-curve point (every --eval-every)
 * </pre>
 *
 * The objects are created once per family (names pre-encoded, see {@link Nvtx#range}); phases that never run
 * in a family are simply never opened. docs/profiling.md lists them with the kernel names.
 */
public final class StepRanges {
    public final Nvtx.Range step, rollout, forwardStudent, forwardTeachers, loss, backward, metrics, clip, optimizerStep, checkpoint, eval;

    private StepRanges(String family) {
        step = Nvtx.range(family + "/step");
        rollout = Nvtx.range(family + "/rollout");
        forwardStudent = Nvtx.range(family + "/forward_student");
        forwardTeachers = Nvtx.range(family + "/forward_teachers");
        loss = Nvtx.range(family + "/loss");
        backward = Nvtx.range(family + "/backward");
        metrics = Nvtx.range(family + "/metrics");
        clip = Nvtx.range(family + "/clip");
        optimizerStep = Nvtx.range(family + "/optimizer_step");
        checkpoint = Nvtx.range(family + "/checkpoint");
        eval = Nvtx.range(family + "/eval");
    }

    public static final StepRanges SFT = new StepRanges("sft");
    public static final StepRanges DPO = new StepRanges("dpo");
    public static final StepRanges DISTILL = new StepRanges("distill");
    private static final Map<String, StepRanges> BY_FAMILY = Map.of("sft", SFT, "dpo", DPO, "distill", DISTILL);

    /** The ranges of a stage family ({@link Options#stage()}: sft, dpo, distill); another name gets its own set. */
    public static StepRanges of(String family) {
        StepRanges r = BY_FAMILY.get(family);
        return r != null ? r : new StepRanges(family);
    }
}
