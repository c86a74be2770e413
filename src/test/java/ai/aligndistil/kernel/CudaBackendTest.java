package ai.aligndistil.kernel;

import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.condition.EnabledIf;

/**
 * The contract on the CUDA library, through host staging buffers. Tagged {@code gpu}: excluded by default and
 * run on a GPU machine with {@code mvn test -Dgroups=gpu -DexcludedGroups=} or with the JUnit console launcher
 * (benchmarks/gpu/run-gpu-tests.sh), where it is also skipped when no GPU answers.
 */
@Tag("gpu")
@EnabledIf("gpuPresent")
class CudaBackendTest extends FusedDistillLossContract {
    static boolean gpuPresent() { return NativeCuda.available(); }

    @Override
    Backend backend() { return Backend.CUDA; }
}
