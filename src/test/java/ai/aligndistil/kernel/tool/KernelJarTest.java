package ai.aligndistil.kernel.tool;

import ai.aligndistil.io.DType;
import ai.aligndistil.io.Safetensors;
import ai.aligndistil.kernel.Backend;
import ai.aligndistil.kernel.Backends;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.lang.foreign.ValueLayout;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.jar.JarFile;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * {@code java -jar target/aligndistil-kernel.jar replay --in B --out R} in a fresh JVM whose class path holds that
 * jar alone: it loads the native CPU library from the jar and writes the same result as the in-process
 * {@code replay} (bit for bit: the CPU loss does not depend on the thread count) and the same stdout line.
 */
class KernelJarTest {
    @TempDir
    Path dir;

    @Test
    void jarHoldsKernelAndIoOnly() throws IOException {
        try (JarFile jar = new JarFile(KernelJar.path().toFile())) {
            assertEquals("ai.aligndistil.kernel.tool.KernelMain", jar.getManifest().getMainAttributes().getValue("Main-Class"));
            var bad = jar.stream().map(e -> e.getName()).filter(n -> n.endsWith(".class"))
                    .filter(n -> !n.startsWith("ai/aligndistil/kernel/") && !n.startsWith("ai/aligndistil/io/"))
                    .limit(5).toList();
            assertTrue(bad.isEmpty(), "classes outside kernel and io (picocli must be relocated under kernel/tool/shaded): " + bad);
            assertTrue(jar.getEntry("ai/aligndistil/kernel/tool/shaded/picocli/CommandLine.class") != null, "relocated picocli");
            if (Backends.available(Backend.CPU))
                assertTrue(jar.getEntry("native/linux-x86_64/libaligndistil_cpu.so") != null, "the CPU library is in the jar");
        }
    }

    @Test
    void replayFromTheJarAloneMatchesTheInProcessReplay() throws Exception {
        boolean[][] mask = {{false, true, true, true, true}, {true, true, true, false, false}};
        Path in = dir.resolve("batch.safetensors"), mine = dir.resolve("in-process.safetensors"), theirs = dir.resolve("jar.safetensors");
        new ReplayCommandTest().writeBatch(in, 2, 5, 301, DType.BF16, 0, mask, "bool", 11);

        ByteArrayOutputStream o = new ByteArrayOutputStream(), e = new ByteArrayOutputStream();
        int code = KernelMain.run(new String[] {"replay", "--in", in.toString(), "--out", mine.toString(), "--beta", "0.2"},
                new PrintStream(o, true, StandardCharsets.UTF_8), new PrintStream(e, true, StandardCharsets.UTF_8));
        assertEquals(0, code, e.toString(StandardCharsets.UTF_8));

        Path work = Files.createDirectories(dir.resolve("work"));
        KernelJar.Result r = KernelJar.java(dir.resolve("cache"), work, "-jar", KernelJar.path().toString(),
                "replay", "--in", in.toString(), "--out", theirs.toString(), "--beta", "0.2");
        assertEquals(0, r.code(), r.err());
        assertEquals(o.toString(StandardCharsets.UTF_8).replace(mine.toString(), "OUT"), r.out().replace(theirs.toString(), "OUT"), "the same stdout");
        if (Backends.available(Backend.CPU)) {
            assertTrue(r.out().contains("backend cpu"), "the native CPU library loads from the jar: " + r.out() + r.err());
            try (var files = Files.list(dir.resolve("cache"))) {
                assertTrue(files.findAny().isPresent(), "the library was extracted from the jar into the given cache folder");
            }
        }
        try (Safetensors.Reader a = Safetensors.open(mine); Safetensors.Reader b = Safetensors.open(theirs)) {
            assertEquals(a.metadata(), b.metadata());
            assertEquals(a.segment("loss").get(ValueLayout.JAVA_DOUBLE_UNALIGNED, 0), b.segment("loss").get(ValueLayout.JAVA_DOUBLE_UNALIGNED, 0));
            for (String t : new String[] {"token_loss", "weight", "metrics", "grad_student_logits"}) {
                float[] x = a.readFloats(t), y = b.readFloats(t);
                if (!Arrays.equals(x, y)) {
                    int i = Arrays.mismatch(x, y);
                    assertArrayEquals(x, y, t + " differs first at " + i + ": " + x[i] + " vs " + y[i]);
                }
            }
        }
    }

    @Test
    void usageErrorAndHelpFromTheJar() throws Exception {
        Path work = Files.createDirectories(dir.resolve("work"));
        KernelJar.Result r = KernelJar.java(dir.resolve("cache"), work, "-jar", KernelJar.path().toString(), "replay", "--in", "x", "--bogus", "-v");
        assertEquals(2, r.code(), r.err());
        assertTrue(r.err().lines().count() <= 2 && r.err().contains("--bogus"), r.err());
        r = KernelJar.java(dir.resolve("cache"), work, "-jar", KernelJar.path().toString(), "replay", "--help");
        assertEquals(0, r.code(), r.err());
        assertTrue(r.out().contains("--[no-]length-norm") && r.out().contains("--sequence-divisor"), r.out());
    }
}
