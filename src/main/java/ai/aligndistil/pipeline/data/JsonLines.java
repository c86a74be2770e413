package ai.aligndistil.pipeline.data;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import ai.aligndistil.io.Json;

/** Appends JSON objects as lines (metrics logs, curves); non-finite numbers are written as null. */
public final class JsonLines {
    private final Path file;

    public JsonLines(Path file) { this.file = file; }

    public Path file() { return file; }

    public void append(Map<String, Object> row) {
        StringBuilder b = new StringBuilder();
        Json.write(b, sanitize(row));
        b.append('\n');
        try {
            Files.createDirectories(file.toAbsolutePath().getParent());
            Files.writeString(file, b, StandardCharsets.UTF_8, StandardOpenOption.CREATE, StandardOpenOption.APPEND);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /** Drops lines whose {@code step} is above {@code step} (used when a run resumes from a checkpoint). */
    public void truncateAfter(long step) throws IOException {
        if (!Files.exists(file)) return;
        List<String> keep = new ArrayList<>();
        for (String s : Files.readAllLines(file)) {
            if (s.isBlank()) continue;
            Object st = Json.parseObject(s).get("step");
            if (!(st instanceof Number n) || n.longValue() <= step) keep.add(s);
        }
        ai.aligndistil.model.HfCheckpoint.writeAtomically(file, keep.isEmpty() ? "" : String.join("\n", keep) + "\n");
    }

    /** Reads every line of a JSON-lines file. */
    public static List<Map<String, Object>> read(Path file) throws IOException {
        List<Map<String, Object>> out = new ArrayList<>();
        if (!Files.exists(file)) return out;
        for (String s : Files.readAllLines(file)) if (!s.isBlank()) out.add(Json.parseObject(s));
        return out;
    }

    @SuppressWarnings("unchecked")
    public static Object sanitize(Object v) {
        if (v instanceof Double d && !Double.isFinite(d)) return null;
        if (v instanceof Float f && !Float.isFinite(f)) return null;
        if (v instanceof Map<?, ?> m) {
            Map<String, Object> o = new java.util.LinkedHashMap<>();
            for (var e : m.entrySet()) o.put(String.valueOf(e.getKey()), sanitize(e.getValue()));
            return o;
        }
        if (v instanceof List<?> l) {
            List<Object> o = new ArrayList<>();
            for (Object x : l) o.add(sanitize(x));
            return o;
        }
        return v;
    }
}
