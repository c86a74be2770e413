package ai.aligndistil.kernel.tool;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import javax.tools.JavaCompiler;
import javax.tools.ToolProvider;
import java.io.ByteArrayOutputStream;
import java.io.File;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The README's embedding example, exactly as written between its {@code embedding-example} markers, compiles
 * against target/aligndistil-kernel.jar alone and runs on it alone (a fresh JVM), printing a finite loss.
 */
class EmbeddingExampleTest {
    @TempDir
    Path dir;

    static String example() throws Exception {
        String readme = Files.readString(Path.of("README.md"), StandardCharsets.UTF_8);
        int b = readme.indexOf("<!-- embedding-example:begin -->"), e = readme.indexOf("<!-- embedding-example:end -->");
        assertTrue(b >= 0 && e > b, "README.md has the embedding-example markers");
        String block = readme.substring(b, e);
        int open = block.indexOf("```java\n"), close = block.lastIndexOf("```");
        assertTrue(open >= 0 && close > open, "a ```java block between the markers");
        return block.substring(open + "```java\n".length(), close);
    }

    @Test
    void readmeExampleCompilesAndRunsAgainstTheKernelJarAlone() throws Exception {
        Path jar = KernelJar.path();
        String src = example();
        assertTrue(src.contains("public class Embed"), src);
        Path srcDir = Files.createDirectories(dir.resolve("src")), classes = Files.createDirectories(dir.resolve("classes"));
        Path file = Files.writeString(srcDir.resolve("Embed.java"), src, StandardCharsets.UTF_8);
        JavaCompiler javac = ToolProvider.getSystemJavaCompiler();
        ByteArrayOutputStream diag = new ByteArrayOutputStream();
        int rc = javac.run(null, diag, diag, "-Xlint:all", "-Werror", "--class-path", jar.toString(), "-d", classes.toString(), file.toString());
        assertEquals(0, rc, "the README example does not compile against the kernel jar alone:\n" + diag.toString(StandardCharsets.UTF_8));

        KernelJar.Result r = KernelJar.java(dir.resolve("cache"), dir, "-cp", jar + File.pathSeparator + classes, "Embed");
        assertEquals(0, r.code(), r.out() + r.err());
        var m = java.util.regex.Pattern.compile("loss (\\S+) on (\\S+), dL/dz\\[0,0,0\\] (\\S+)").matcher(r.out());
        assertTrue(m.find(), r.out());
        double loss = Double.parseDouble(m.group(1));
        assertTrue(Double.isFinite(loss) && loss > 0, "loss " + loss);
        assertTrue(Double.isFinite(Double.parseDouble(m.group(3))), r.out());
    }
}
