package ai.aligndistil.kernel;

import ai.aligndistil.io.DType;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

import java.lang.foreign.Arena;
import java.util.ArrayList;
import java.util.List;

/**
 * Each vector code path of the CPU library (forced; the automatic choice runs in {@link CpuBackendTest}), each with its
 * automatic row design and with the caching and the recomputing design forced, against the reference on a few shapes
 * that exercise the vector tails, -inf tails, bf16/f16 and in-place paths, and rows long enough (20,011 columns) for
 * the automatic choice to recompute f32 rows on the avx512 path.
 */
class CpuIsaPathsTest {
    @AfterEach
    void restore() {
        NativeCpu.forceIsa("auto");
        if (NativeCpu.rowDesign() != null) NativeCpu.forceRowDesign("auto");
    }

    static List<Arguments> paths() {
        List<Arguments> a = new ArrayList<>();
        for (String isa : new String[] {"avx512", "avx2", "portable"})
            for (String design : new String[] {"auto", "caching", "recomputing"}) a.add(Arguments.of(isa, design));
        return a;
    }

    @ParameterizedTest(name = "{0} {1}")
    @MethodSource("paths")
    void pathMatchesReference(String isa, String design) {
        org.junit.jupiter.api.Assertions.assertTrue(NativeCpu.available(), NativeCpu.problem());
        Assumptions.assumeTrue(NativeCpu.forceIsa(isa), "this CPU cannot run the " + isa + " path");
        org.junit.jupiter.api.Assertions.assertEquals(isa, NativeCpu.isa());
        NativeCpu.forceRowDesign(design);
        org.junit.jupiter.api.Assertions.assertEquals(design, NativeCpu.rowDesign());
        Inputs.Spec[] specs = {
            Inputs.Spec.of(2, 3, 1, DType.F32, 1), Inputs.Spec.of(2, 3, 7, DType.F32, 2), Inputs.Spec.of(1, 5, 129, DType.BF16, 3),
            Inputs.Spec.of(2, 4, 4099, DType.F16, 4).negInfTail(77), Inputs.Spec.of(1, 2, 50257, DType.F32, 5).scale(1e4),
            Inputs.Spec.of(2, 3, 1031, DType.F32, 6).withNearStudent(), Inputs.Spec.of(1, 2, 20011, DType.F32, 7),
            Inputs.Spec.of(1, 2, 20011, DType.BF16, 8).negInfTail(5)};
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
                    String ctx = isa + "/" + design + " " + v + " " + spec;
                    Compare.scalar(ctx + ": loss", l, r, tol.scalar());
                    Compare.outputs(ctx, in, got, ref, tol);
                    org.junit.jupiter.api.Assertions.assertNull(got.guardViolation());
                }
            }
        }
    }

    @org.junit.jupiter.api.Test
    void unknownRowDesignIsRefused() {
        org.junit.jupiter.api.Assertions.assertTrue(NativeCpu.available(), NativeCpu.problem());
        var e = org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class, () -> NativeCpu.forceRowDesign("fastest"));
        org.junit.jupiter.api.Assertions.assertTrue(e.getMessage().contains("fastest"), e.getMessage());
        org.junit.jupiter.api.Assertions.assertEquals("auto", NativeCpu.rowDesign());
    }
}
