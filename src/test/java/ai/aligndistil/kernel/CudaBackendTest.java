package ai.aligndistil.kernel;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Nested;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.condition.EnabledIf;

import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * The contract on the CUDA library, through host staging buffers, once per row kernel: the portable multi-pass
 * kernel and the Hopper cluster kernel (skipped below compute capability 9.0; cases whose rows are not 16-byte
 * aligned, e.g. odd V, fall back to the multi-pass kernel inside the library, so the V = 151,936 / 1000 / 4096-aligned
 * cases are the ones that exercise the cluster kernel). Tagged {@code gpu}: excluded by default and run on a GPU
 * machine with {@code mvn test -Dgroups=gpu -DexcludedGroups=} or with the JUnit console launcher
 * (benchmarks/gpu/run-gpu-tests.sh), where it is also skipped when no GPU answers.
 */
@Tag("gpu")
@EnabledIf("gpuPresent")
class CudaBackendTest {
    static boolean gpuPresent() { return NativeCuda.available(); }

    @Nested
    class Multipass extends FusedDistillLossContract {
        private String before;

        @BeforeEach
        void useMultipass() {
            before = NativeCuda.kernel();
            NativeCuda.setKernel("multipass");
        }

        @AfterEach
        void restore() { NativeCuda.setKernel(before); }

        @Override
        Backend backend() { return Backend.CUDA; }

        @Test
        void settingReadsBack() { assertEquals("multipass", NativeCuda.kernel()); }
    }

    @Nested
    class Cluster extends FusedDistillLossContract {
        private String before;

        @BeforeEach
        void useCluster() {
            long[] info = NativeCuda.deviceInfo(0);
            Assumptions.assumeTrue(info[0] >= 9, "the cluster kernel needs compute capability 9.0+, this GPU is " + info[0] + "." + info[1]);
            before = NativeCuda.kernel();
            NativeCuda.setKernel("cluster");
        }

        @AfterEach
        void restore() { if (before != null) NativeCuda.setKernel(before); }

        @Override
        Backend backend() { return Backend.CUDA; }

        @Test
        void settingReadsBack() { assertEquals("cluster", NativeCuda.kernel()); }
    }
}
