package ai.aligndistil.pipeline.config;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;


import ai.aligndistil.io.Json;

/**
 * The hyper-parameters of one stage: declared keys with defaults and help text ({@link Spec}), overridden by a
 * JSON config file ({@code --config FILE}, keys spelled as the flags without dashes) and then by command-line
 * flags ({@code --key value}, {@code --key=value}, {@code --flag} / {@code --no-flag} for booleans), parsed by
 * picocli ({@link StageCommandLine}, the same command the CLI runs). Unknown keys are usage errors naming the
 * key (and the file). Keys of a config file that this stage does not declare are ignored when the file says so
 * with {@code "_shared": true} (one file can then feed every stage).
 */
public final class Options {
    private final String stage;
    private final Map<String, String> defaults;
    private final Map<String, String> values;
    private final java.util.Set<String> booleans;

    private Options(String stage, Map<String, String> defaults, java.util.Set<String> booleans, Map<String, String> values) {
        this.stage = stage;
        this.defaults = defaults;
        this.booleans = booleans;
        this.values = values;
    }

    /** A declaration of keys: name, default (null = required or unset), and whether it is a boolean flag. */
    public static final class Spec {
        final String stage;
        final Map<String, String> defaults = new LinkedHashMap<>();
        final java.util.Set<String> booleans = new java.util.HashSet<>();
        final Map<String, String> descriptions = new LinkedHashMap<>();

        public Spec(String stage) { this.stage = stage; }

        public Spec value(String name, Object def) {
            defaults.put(name, def == null ? null : String.valueOf(def));
            return this;
        }

        /** A valued option with its help text (what it does, its unit; the default is shown by the help itself). */
        public Spec value(String name, Object def, String description) {
            descriptions.put(name, description);
            return value(name, def);
        }

        /** A boolean flag ({@code --name} / {@code --no-name}) with its help text. */
        public Spec flag(String name, boolean def, String description) {
            descriptions.put(name, description);
            return flag(name, def);
        }

        /** The help text of an option, or null where none was declared. */
        public String description(String name) { return descriptions.get(name); }

        public Spec flag(String name, boolean def) {
            defaults.put(name, Boolean.toString(def));
            booleans.add(name);
            return this;
        }

        /** Defaults only (for the Java API). */
        public Options defaults() { return new Options(stage, defaults, booleans, new LinkedHashMap<>(defaults)); }

        /** The stage this declares options for (the command's name). */
        public String stage() { return stage; }

        /** The declared option names, in declaration order. */
        public List<String> names() { return List.copyOf(defaults.keySet()); }

        /** True for a boolean flag ({@code --name} / {@code --no-name}). */
        public boolean isFlag(String name) { return booleans.contains(name); }

        /** The declared default of an option as a string (null: required or unset). */
        public String defaultValue(String name) { return defaults.get(name); }

        /**
         * Parses command-line flags through the same picocli command the CLI builds from this declaration
         * ({@link StageCommandLine}): {@code --key value}, {@code --key=value}, {@code --flag} / {@code --no-flag},
         * {@code --config FILE}; flags over the file over the defaults. Problems are usage errors naming the option.
         */
        public Options parse(String... args) { return StageCommandLine.parse(this, args); }

        /** The options of a finished parse: one value (or null) for every declared key. */
        Options of(Map<String, String> values) {
            Map<String, String> v = new LinkedHashMap<>(defaults);
            for (var e : values.entrySet()) {
                if (!defaults.containsKey(e.getKey())) throw new IllegalArgumentException(stage + ": undeclared option " + e.getKey());
                v.put(e.getKey(), e.getValue());
            }
            return new Options(stage, defaults, booleans, v);
        }

        /**
         * The values a JSON config file gives this stage: top-level keys (spelled as the flags without dashes) and
         * the keys of a section named after the stage ({@code {"dpo": {...}}}), which override them; other stages'
         * sections are skipped. A key this stage does not declare is a usage error naming the file, unless the
         * file says {@code "_shared": true} (one file for every stage; a per-stage section is still checked).
         */
        public Map<String, String> readConfig(Path file) {
            Map<String, Object> j;
            try {
                j = Json.parseObject(Files.readString(file));
            } catch (IOException e) {
                throw PipelineException.failure(stage + ": cannot read config " + file + ": " + e.getMessage());
            } catch (Json.JsonException e) {
                throw PipelineException.failure(stage + ": " + file + ": not valid JSON: " + e.getMessage());
            }
            boolean shared = Boolean.TRUE.equals(j.get("_shared"));
            Map<String, String> out = new LinkedHashMap<>();
            for (var e : j.entrySet()) {
                String k = e.getKey();
                if (k.startsWith("_")) continue;
                Object val = e.getValue();
                if (val instanceof Map<?, ?> m && k.equals(stage)) {
                    // a per-stage section: {"dpo": {...}} overrides the shared keys
                    for (var s : m.entrySet()) put(out, file, String.valueOf(s.getKey()), s.getValue(), false);
                    continue;
                }
                if (val instanceof Map<?, ?>) continue; // another stage's section
                put(out, file, k, val, shared);
            }
            return out;
        }

        private void put(Map<String, String> out, Path file, String k, Object val, boolean lenient) {
            if (!defaults.containsKey(k)) {
                if (lenient) return;
                throw PipelineException.usage(stage + ": " + file + ": unknown key '" + k + "'");
            }
            out.put(k, val == null ? null : val instanceof String s ? s : val instanceof Double d && d == Math.rint(d) && Math.abs(d) < 1e15 ? Long.toString(d.longValue()) : String.valueOf(val));
        }
    }

    public Options with(String key, Object value) {
        if (!defaults.containsKey(key)) throw new IllegalArgumentException(stage + ": unknown option " + key);
        Map<String, String> v = new LinkedHashMap<>(values);
        v.put(key, value == null ? null : String.valueOf(value));
        return new Options(stage, defaults, booleans, v);
    }

    public String stage() { return stage; }

    public boolean has(String k) { return values.get(k) != null; }

    public String str(String k) {
        check(k);
        return values.get(k);
    }

    public String require(String k) {
        String s = str(k);
        if (s == null || s.isEmpty()) throw PipelineException.usage(stage + ": missing --" + k);
        return s;
    }

    public Path path(String k) { return Path.of(require(k)); }

    public double num(String k) {
        String s = require(k);
        try {
            return Double.parseDouble(s);
        } catch (NumberFormatException e) {
            throw PipelineException.usage(stage + ": --" + k + " expects a number, got '" + s + "'");
        }
    }

    public int integer(String k) {
        String s = require(k);
        try {
            return Integer.parseInt(s);
        } catch (NumberFormatException e) {
            throw PipelineException.usage(stage + ": --" + k + " expects an integer, got '" + s + "'");
        }
    }

    public long longValue(String k) {
        String s = require(k);
        try {
            return Long.parseLong(s);
        } catch (NumberFormatException e) {
            throw PipelineException.usage(stage + ": --" + k + " expects an integer, got '" + s + "'");
        }
    }

    public boolean bool(String k) {
        String s = require(k);
        if (!s.equals("true") && !s.equals("false")) throw PipelineException.usage(stage + ": --" + k + " expects true or false, got '" + s + "'");
        return s.equals("true");
    }

    /** All values, for the run record. */
    public Map<String, String> asMap() { return Collections.unmodifiableMap(values); }

    public List<String> keys() { return List.copyOf(defaults.keySet()); }

    private void check(String k) {
        if (!defaults.containsKey(k)) throw new IllegalArgumentException(stage + ": undeclared option " + k);
    }
}
