package ai.aligndistil.model;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

/** {@code --device}: parsing, and the one-line cause for every way CUDA can be unusable (pure, so every branch runs on the CPU). */
class DevicesTest {
    @Test
    void parsesTheFourForms() {
        assertEquals(new Devices.Request(true, false, 0), Devices.Request.parse("auto"));
        assertEquals(new Devices.Request(false, false, 0), Devices.Request.parse("CPU"));
        assertEquals(new Devices.Request(false, true, 0), Devices.Request.parse("cuda"));
        assertEquals(new Devices.Request(false, true, 3), Devices.Request.parse("cuda:3"));
        for (String bad : new String[] {"gpu", "cuda:", "cuda:-1", "cuda:x", "", "cuda0"}) {
            Devices.UnavailableException e = assertThrows(Devices.UnavailableException.class, () -> Devices.Request.parse(bad));
            assertTrue(e.getMessage().startsWith("--device must be auto, cpu, cuda or cuda:N"), e.getMessage());
        }
        assertEquals("cuda:2", new Devices.Choice(true, 2).name());
        assertEquals("cpu", Devices.resolve("cpu").name());
    }

    @Test
    void diagnosesEveryCause() {
        assertTrue(Devices.diagnose(new Devices.Facts(false, null, 0, null, false, 0), 0).contains("GPU build of the PyTorch presets is not on the class path"));
        assertTrue(Devices.diagnose(new Devices.Facts(true, "no NVIDIA driver (libcuda.so.1 does not open: x)", 0, null, false, 0), 0).startsWith("no NVIDIA driver"));
        assertEquals("the NVIDIA driver is too old: it supports CUDA 12.8, the GPU build needs CUDA 13.0 or newer (driver 580+)",
                Devices.diagnose(new Devices.Facts(true, null, 12080, null, false, 1), 0));
        assertEquals("libtorch_cuda.so did not load: libcublas.so.13 is missing (not found on the loader path: LD_LIBRARY_PATH, ldconfig)",
                Devices.diagnose(new Devices.Facts(true, null, 13000, Devices.missingLibrary(
                        "/root/.javacpp/cache/x/libtorch_cuda.so: libcublas.so.13: cannot open shared object file: No such file or directory"), false, 1), 0));
        assertEquals("the driver reports no CUDA device", Devices.diagnose(new Devices.Facts(true, null, 13000, null, false, 0), 0));
        assertEquals("cuda:2 was asked for but the driver reports 2 devices", Devices.diagnose(new Devices.Facts(true, null, 13010, null, true, 2), 2));
        assertNull(Devices.diagnose(new Devices.Facts(true, null, 13010, null, true, 2), 1));
    }

    @Test
    void onTheCpuBuildCudaIsRefusedAndAutoFallsBackToTheCpu() {
        org.junit.jupiter.api.Assumptions.assumeTrue(!Devices.gpuBuildOnClassPath(), "the GPU build is on the class path");
        Devices.UnavailableException e = assertThrows(Devices.UnavailableException.class, () -> Devices.resolve("cuda"));
        assertTrue(e.getMessage().startsWith("--device cuda: CUDA is not usable: the GPU build of the PyTorch presets is not on the class path"), e.getMessage());
        assertEquals(Devices.Choice.CPU, Devices.resolve("auto"));
    }

    /** The cause is read from the dynamic loader's own message: a real library whose dependency is missing. */
    @Test
    void readsTheMissingLibraryFromTheLoadersMessage(@org.junit.jupiter.api.io.TempDir java.nio.file.Path tmp) throws Exception {
        org.junit.jupiter.api.Assumptions.assumeTrue(new ProcessBuilder("cc", "--version").start().waitFor() == 0, "no C compiler");
        java.nio.file.Files.writeString(tmp.resolve("dep.c"), "int ad_dep(void) { return 1; }\n");
        java.nio.file.Files.writeString(tmp.resolve("user.c"), "int ad_dep(void); int ad_user(void) { return ad_dep(); }\n");
        run(tmp, "cc", "-shared", "-fPIC", "-o", "libaddep.so.13", "dep.c", "-Wl,-soname,libaddep.so.13");
        run(tmp, "cc", "-shared", "-fPIC", "-o", "libaduser.so", "user.c", "-L.", "-l:libaddep.so.13");
        java.nio.file.Files.delete(tmp.resolve("libaddep.so.13"));
        UnsatisfiedLinkError e = assertThrows(UnsatisfiedLinkError.class, () -> System.load(tmp.resolve("libaduser.so").toString()));
        assertEquals("libaddep.so.13 is missing (not found on the loader path: LD_LIBRARY_PATH, ldconfig)", Devices.missingLibrary(e.getMessage()));
    }

    private static void run(java.nio.file.Path dir, String... cmd) throws Exception {
        Process p = new ProcessBuilder(cmd).directory(dir.toFile()).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes());
        assertEquals(0, p.waitFor(), String.join(" ", cmd) + ": " + out);
    }
}
