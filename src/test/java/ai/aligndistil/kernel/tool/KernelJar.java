package ai.aligndistil.kernel.tool;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/** target/aligndistil-kernel.jar and a fresh JVM to run things against it alone. */
final class KernelJar {
    private KernelJar() {}

    /** The jar (built at process-classes, before the tests); a test that needs it fails, never skips, when it is missing. */
    static Path path() {
        Path jar = Path.of(System.getProperty("aligndistil.test.kernel.jar", "target/aligndistil-kernel.jar")).toAbsolutePath();
        if (!Files.isRegularFile(jar))
            fail(jar + " is missing: the build makes it at process-classes, before the tests (mvn test or mvn process-classes)");
        return jar;
    }

    record Result(int code, String out, String err) {}

    /**
     * Runs {@code java --enable-native-access=ALL-UNNAMED ARGS} in a fresh JVM: no CLASSPATH from the environment,
     * native libraries extracted into {@code cacheDir} (so they come from the jar, not from an earlier run).
     */
    static Result java(Path cacheDir, Path workDir, String... args) throws IOException, InterruptedException {
        List<String> cmd = new ArrayList<>();
        cmd.add(Path.of(System.getProperty("java.home"), "bin", "java").toString());
        cmd.add("--enable-native-access=ALL-UNNAMED");
        cmd.add("-Daligndistil.cache.dir=" + cacheDir);
        cmd.addAll(List.of(args));
        ProcessBuilder pb = new ProcessBuilder(cmd).directory(workDir.toFile());
        pb.environment().remove("CLASSPATH");
        pb.environment().remove("JAVA_TOOL_OPTIONS");
        pb.environment().remove("JDK_JAVA_OPTIONS");
        Path out = workDir.resolve("stdout.txt"), err = workDir.resolve("stderr.txt");
        pb.redirectOutput(out.toFile()).redirectError(err.toFile());
        Process p = pb.start();
        if (!p.waitFor(120, TimeUnit.SECONDS)) {
            p.destroyForcibly();
            fail("timed out after 120 s: " + String.join(" ", cmd));
        }
        Result r = new Result(p.exitValue(), Files.readString(out, StandardCharsets.UTF_8), Files.readString(err, StandardCharsets.UTF_8));
        assertTrue(r.err().lines().noneMatch(l -> l.contains("Exception in thread")), "the JVM died: " + r.err());
        return r;
    }
}
