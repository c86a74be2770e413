package ai.aligndistil.kernel;

import ai.aligndistil.io.DType;
import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The C ABI's structs and their Java mirrors are tied through native/include/aligndistil.h: the header
 * static_asserts the offset of every field and the size of every struct the Java side writes or reads (the C and
 * CUDA compilers check those numbers against the real layout), and this test reads the same lines and compares
 * each number with the Java constant its message names. It also checks that no field of those structs lacks an
 * assert, and that the Java codes (dtypes, variants, status codes) equal the header's #defines.
 */
class StructLayoutTest {
    static final Path HEADER = Path.of("native/include/aligndistil.h");
    static final Pattern ASSERT = Pattern.compile(
            "AD_STATIC_ASSERT\\((?:offsetof\\((\\w+), (\\w+)\\)|sizeof\\((\\w+)\\)) == (\\d+), \"Java: ([\\w.]+)\"\\);");

    record Check(String struct, String field, long offset, String javaName) {}

    static String header() throws IOException {
        assertTrue(Files.isRegularFile(HEADER), HEADER.toAbsolutePath() + " is missing");
        return Files.readString(HEADER);
    }

    static List<Check> checks(String h) {
        List<Check> out = new ArrayList<>();
        Matcher m = ASSERT.matcher(h);
        while (m.find()) out.add(m.group(1) != null ? new Check(m.group(1), m.group(2), Long.parseLong(m.group(4)), m.group(5))
                : new Check(m.group(3), null, Long.parseLong(m.group(4)), m.group(5)));
        return out;
    }

    /** The field names of {@code typedef struct NAME { ... } NAME;} in declaration order. */
    static List<String> fields(String h, String struct) {
        Matcher m = Pattern.compile("typedef struct " + struct + " \\{(.*?)\\} " + struct + ";", Pattern.DOTALL).matcher(h);
        assertTrue(m.find(), "struct " + struct + " not found in the header");
        String body = m.group(1).replaceAll("(?s)/\\*.*?\\*/", "");
        List<String> names = new ArrayList<>();
        for (String decl : body.split(";")) {
            Matcher n = Pattern.compile("(\\w+)\\s*$").matcher(decl.strip());
            if (!decl.isBlank() && n.find()) names.add(n.group(1));
        }
        return names;
    }

    /** A static final long (or int) of a kernel class, e.g. "ProblemStruct.ST_CODE" or "CudaFusedLinearLoss.Layout.SIZE". */
    static long javaConstant(String name) throws ReflectiveOperationException {
        int dot = name.lastIndexOf('.');
        String cls = "ai.aligndistil.kernel." + name.substring(0, dot).replace('.', '$');
        var f = Class.forName(cls).getDeclaredField(name.substring(dot + 1));
        f.setAccessible(true);
        return ((Number) f.get(null)).longValue();
    }

    @Test
    void everyAssertedOffsetIsTheJavaConstant() throws Exception {
        List<Check> checks = checks(header());
        assertTrue(checks.size() > 50, "the header's static_asserts were found: " + checks.size());
        List<String> wrong = new ArrayList<>();
        for (Check c : checks) {
            long java = javaConstant(c.javaName());
            if (java != c.offset())
                wrong.add(c.struct() + (c.field() == null ? " size " : "." + c.field() + " at ") + c.offset() + " in C, but " + c.javaName() + " = " + java);
        }
        assertTrue(wrong.isEmpty(), "C and Java disagree:\n" + String.join("\n", wrong));
    }

    @Test
    void everyFieldOfTheMirroredStructsIsAsserted() throws Exception {
        String h = header();
        Map<String, Set<String>> asserted = new LinkedHashMap<>();
        Set<String> sized = new LinkedHashSet<>();
        for (Check c : checks(h)) {
            if (c.field() == null) sized.add(c.struct());
            else asserted.computeIfAbsent(c.struct(), k -> new LinkedHashSet<>()).add(c.field());
        }
        for (String struct : List.of("ad_fdl_problem", "ad_fdl_status", "ad_fll_problem")) {
            List<String> fields = fields(h, struct);
            assertEquals(new LinkedHashSet<>(fields), asserted.get(struct), struct + ": every field has its offset asserted");
            assertTrue(sized.contains(struct), struct + ": its size is asserted");
        }
    }

    @Test
    void codesMatchTheHeaderDefines() throws Exception {
        String h = header();
        Map<String, Long> defines = new LinkedHashMap<>();
        Matcher m = Pattern.compile("(?m)^#define (AD_\\w+)\\s+(\\d+)\\b").matcher(h);
        while (m.find()) defines.put(m.group(1), Long.parseLong(m.group(2)));
        assertEquals(defines.get("AD_F32"), (long) ProblemStruct.code("t", DType.F32));
        assertEquals(defines.get("AD_BF16"), (long) ProblemStruct.code("t", DType.BF16));
        assertEquals(defines.get("AD_F16"), (long) ProblemStruct.code("t", DType.F16));
        for (Variant v : Variant.values()) assertEquals(defines.get("AD_VARIANT_" + v.name()), (long) v.code, v.name());
        for (String s : List.of("AD_OK", "AD_ERR_INVALID_ARGUMENT", "AD_ERR_NONFINITE", "AD_ERR_EMPTY_ROW", "AD_ERR_UNSUPPORTED", "AD_ERR_CUDA", "AD_ERR_OUT_OF_MEMORY"))
            assertEquals(defines.get(s), javaConstant("ProblemStruct." + s), s);
    }
}
