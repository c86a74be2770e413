package ai.aligndistil.kernel;

import ai.aligndistil.io.DType;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.lang.foreign.Arena;

/**
 * Each vector code path of the CPU library (forced; the automatic choice runs in {@link CpuBackendTest}) against
 * the reference on a few shapes that exercise the vector tails, -inf tails, bf16/f16 and in-place paths.
 */
class CpuIsaPathsTest {
    @AfterEach
    void restore() { NativeCpu.forceIsa("auto"); }

    @ParameterizedTest
    @ValueSource(strings = {"avx512", "avx2", "portable"})
    void pathMatchesReference(String isa) {
        org.junit.jupiter.api.Assertions.assertTrue(NativeCpu.available(), NativeCpu.problem());
        Assumptions.assumeTrue(NativeCpu.forceIsa(isa), "this CPU cannot run the " + isa + " path");
        org.junit.jupiter.api.Assertions.assertEquals(isa, NativeCpu.isa());
        Inputs.Spec[] specs = {
            Inputs.Spec.of(2, 3, 1, DType.F32, 1), Inputs.Spec.of(2, 3, 7, DType.F32, 2), Inputs.Spec.of(1, 5, 129, DType.BF16, 3),
            Inputs.Spec.of(2, 4, 4099, DType.F16, 4).negInfTail(77), Inputs.Spec.of(1, 2, 50257, DType.F32, 5).scale(1e4),
            Inputs.Spec.of(2, 3, 1031, DType.F32, 6).withNearStudent()};
        for (Variant v : Variant.values()) {
            for (Inputs.Spec spec : specs) {
                LossConfig cfg = LossConfig.defaults(v).withTemperature(0.9);
                try (Arena arena = Arena.ofConfined()) {
                    Inputs in = new Inputs(spec, arena);
                    DType gt = spec.dtype();
                    Inputs.Outputs got = new Inputs.Outputs(in, gt, arena), ref = new Inputs.Outputs(in, DType.F32, arena);
                    double l = in.run(FusedDistillLoss.create(cfg, Backend.CPU), got, false, 0);
                    double r = in.run(FusedDistillLoss.create(cfg, Backend.REFERENCE), ref, false, 0);
                    Compare.Tol tol = Compare.Tol.forCase(spec.dtype(), gt, spec.scale());
                    String ctx = isa + " " + v + " " + spec;
                    Compare.scalar(ctx + ": loss", l, r, tol.scalar());
                    Compare.outputs(ctx, in, got, ref, tol);
                    org.junit.jupiter.api.Assertions.assertNull(got.guardViolation());
                }
            }
        }
    }
}
