package ai.aligndistil.kernel;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The row-kernel setting's names (no GPU needed: parsing only). */
class CudaKernelSettingTest {
    @Test
    void namesMapToTheAbiValues() {
        assertEquals(NativeCuda.KERNEL_AUTO, NativeCuda.parseKernel("auto"));
        assertEquals(NativeCuda.KERNEL_MULTIPASS, NativeCuda.parseKernel(" MultiPass "));
        assertEquals(NativeCuda.KERNEL_CLUSTER, NativeCuda.parseKernel("cluster"));
        for (int k = 0; k < 3; k++) assertEquals(k, NativeCuda.parseKernel(NativeCuda.kernelName(k)));
    }

    @Test
    void unknownNamesAreRejectedWithTheProperty() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> NativeCuda.parseKernel("hopper"));
        assertTrue(e.getMessage().contains(NativeCuda.KERNEL_PROPERTY), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> NativeCuda.kernelName(3));
        assertThrows(IllegalArgumentException.class, () -> NativeCuda.kernelName(-1));
    }
}
