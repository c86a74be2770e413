package ai.aligndistil.kernel;

import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Runs the C self-test of the CPU library (native/tests/fdl_cpu_selftest.c: ~100,000 checks against its own
 * independent double-precision reference, every code path this CPU can run, each with its automatic row design and with
 * the caching and the recomputing design forced, 1 and 2 threads, error cases; about 80 s on 2 cores), which the Maven
 * build compiles next to the library.
 */
class NativeCpuSelfTest {
    @Test
    void selfTestPasses() throws IOException, InterruptedException {
        Path build = Path.of(System.getProperty("aligndistil.test.native.build", "target/native-build"));
        Path exe = build.resolve("fdl_cpu_selftest");
        assertTrue(Files.isExecutable(exe), "the build did not produce " + exe + " (CMake option AD_BUILD_TESTS)");
        Process p = new ProcessBuilder(exe.toString()).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertTrue(p.waitFor(10, TimeUnit.MINUTES), "self-test timed out");
        assertEquals(0, p.exitValue(), out);
        assertTrue(out.contains("PASSED"), out);
        String last = out.strip().lines().reduce((a, b) -> b).orElse("");
        System.out.println("fdl_cpu_selftest: " + last);
    }
}
