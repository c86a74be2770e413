package ai.aligndistil.bench;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import ai.aligndistil.io.Json;

/**
 * The contract of the CUDA presets probe that the GPU scripts rely on: run in its own JVM, it always ends with exit
 * code 0, a last line {@code cuda presets: ...}, and a JSON document that says whether the presets load, on any
 * machine. On a machine without a CUDA driver (this build VM) the finding is "does not load" with the loader's reason;
 * on a GPU box it is the whole interop check. Bad options are a usage error (exit code 2), not a finding.
 */
class CudaPresetsProbeTest {

    private static Process start(Path out, String... extra) throws IOException {
        String java = ProcessHandle.current().info().command().orElse(Path.of(System.getProperty("java.home"), "bin", "java").toString());
        List<String> cmd = new java.util.ArrayList<>(List.of(java, "--enable-native-access=ALL-UNNAMED", "-cp", System.getProperty("java.class.path"),
                "ai.aligndistil.bench.CudaPresetsProbe"));
        if (out != null) cmd.addAll(List.of("--out", out.toString()));
        cmd.addAll(List.of(extra));
        // small shapes, in case this machine has a GPU: the probe then runs every stage quickly
        return new ProcessBuilder(cmd).redirectErrorStream(true).start();
    }

    private static String finish(Process p) throws Exception {
        String text = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertTrue(p.waitFor(120, TimeUnit.SECONDS), "probe did not end");
        return text;
    }

    @Test
    void reportsAFindingAndExitsCleanly(@TempDir Path dir) throws Exception {
        Path out = dir.resolve("presets.json");
        Process p = start(out, "--vocab", "1031", "--tokens", "8", "--copy-mib", "8", "--reps", "2");
        String text = finish(p);
        assertEquals(0, p.exitValue(), "probe exit code; output:\n" + text);
        String[] lines = text.strip().split("\n");
        assertTrue(lines[lines.length - 1].startsWith("cuda presets: "), "last line: " + lines[lines.length - 1]);
        Map<String, Object> doc = Json.parseObject(Files.readString(out));
        Object loads = doc.get("loads");
        assertNotNull(loads, "no 'loads' in " + doc);
        assertTrue(String.valueOf(doc.get("presets")).startsWith("org.bytedeco:cuda:"), "presets version: " + doc.get("presets"));
        String summary = (String) doc.get("summary");
        assertNotNull(summary);
        if (Boolean.FALSE.equals(loads)) {
            assertTrue(summary.startsWith("does not load: "), summary);
            assertTrue(summary.length() > "does not load: ".length() + 10, "the reason is missing: " + summary);
            // the pom puts the presets' classes and JNI jar on the test classpath: only the machine's CUDA may be missing
            assertFalse(summary.contains("NoClassDefFoundError") || summary.contains("ClassNotFoundException"), summary);
        } else {
            assertFalse(summary.startsWith("does not load"), summary);
            assertNotNull(doc.get("runtimeVersion"), "versions stage missing: " + doc);
        }
    }

    @Test
    void rejectsBadOptionsWithUsage() throws Exception {
        Process p = start(null, "--tokens", "-3");
        String text = finish(p);
        assertEquals(2, p.exitValue(), text);
        assertTrue(text.contains("--tokens needs a positive integer"), text);
    }
}
