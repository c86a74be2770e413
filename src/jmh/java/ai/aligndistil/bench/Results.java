package ai.aligndistil.bench;

import java.io.IOException;
import java.lang.management.ManagementFactory;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.LocalDate;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Objects;

import ai.aligndistil.io.Json;
import ai.aligndistil.kernel.Backend;
import ai.aligndistil.kernel.Backends;
import ai.aligndistil.kernel.NativeCpu;
import ai.aligndistil.kernel.NativeCuda;

/**
 * Result files and machine facts, with no chart library (so it also runs from the GPU bundle's jlink-ed JDK):
 * <pre>
 *   Results slug cpu|gpu        a file-name slug for this machine's CPU, or GPU 0 ("nogpu" without one)
 *   Results gpu                 one line describing GPU 0; exit code 3 (and the reason) when no CUDA device answers
 *   Results merge --suite S --out F.json --commit C [--dirty true|false] [--load-start L] [--elapsed-s N]
 *                 [--command "..."] [--note "..."] parts.json...
 *                               one JMH JSON array from several JMH runs, plus F.meta.json (date, CPU/GPU, JDK, commit, load)
 * </pre>
 */
public final class Results {
    private Results() {}

    public static void main(String[] args) throws IOException {
        if (args.length == 0) {
            System.err.println("usage: Results slug cpu|gpu | gpu | merge --suite S --out F.json --commit C [...] parts.json...");
            System.exit(2);
        }
        switch (args[0]) {
            case "slug" -> System.out.println(args.length > 1 && args[1].equals("gpu") ? gpuSlug() : cpuSlug());
            case "gpu" -> {
                if (!Backends.available(Backend.CUDA)) {
                    System.out.println("no CUDA device: " + NativeCuda.problem());
                    System.exit(3);
                }
                System.out.println(Gpu.describe());
            }
            case "merge" -> merge(java.util.Arrays.copyOfRange(args, 1, args.length));
            default -> {
                System.err.println("unknown command " + args[0]);
                System.exit(2);
            }
        }
    }

    // ------------------------------------------------------------------------------------------ machine

    static String cpuModel() {
        try {
            String family = null, model = null, name = null;
            for (String line : Files.readAllLines(Path.of("/proc/cpuinfo"))) {
                int c = line.indexOf(':');
                if (c < 0) continue;
                String k = line.substring(0, c).trim(), v = line.substring(c + 1).trim();
                if (k.equals("model name") && name == null) name = v;
                if (k.equals("cpu family") && family == null) family = v;
                if (k.equals("model") && model == null) model = v;
            }
            return (name == null ? "unknown CPU" : name) + (family != null ? " family " + family + " model " + model : "");
        } catch (IOException e) {
            return System.getProperty("os.arch");
        }
    }

    static String cpuSlug() {
        String m = cpuModel().toLowerCase(Locale.ROOT).replace(" family ", " f").replace(" model ", "m");
        return slugify(m) + "-" + Runtime.getRuntime().availableProcessors() + "c";
    }

    static String gpuSlug() {
        if (!Backends.available(Backend.CUDA)) return "nogpu";
        return slugify(NativeCuda.deviceName(0).toLowerCase(Locale.ROOT).replace("nvidia", ""));
    }

    static String slugify(String s) {
        return s.replaceAll("\\(r\\)|\\(tm\\)", "").replaceAll("[^a-z0-9]+", "-").replaceAll("^-+|-+$", "");
    }

    static String loadAverage() {
        try {
            String[] f = Files.readString(Path.of("/proc/loadavg")).trim().split("\\s+");
            return f[0] + " " + f[1] + " " + f[2];
        } catch (IOException e) {
            return "n/a";
        }
    }

    // ------------------------------------------------------------------------------------------ merge

    static void merge(String[] args) throws IOException {
        Map<String, String> opt = new LinkedHashMap<>();
        List<Path> parts = new ArrayList<>();
        for (int i = 0; i < args.length; i++) {
            if (args[i].startsWith("--")) opt.put(args[i].substring(2), args[++i]);
            else parts.add(Path.of(args[i]));
        }
        Path out = Path.of(Objects.requireNonNull(opt.get("out"), "--out"));
        List<Object> all = new ArrayList<>();
        for (Path p : parts) {
            if (!Files.exists(p) || Files.size(p) == 0) {
                System.err.println("report: skipping missing or empty " + p);
                continue;
            }
            all.addAll(asList(Json.parse(Files.readString(p))));
        }
        StringBuilder b = new StringBuilder("[\n");
        for (int i = 0; i < all.size(); i++) b.append("  ").append(Json.write(all.get(i))).append(i + 1 < all.size() ? ",\n" : "\n");
        b.append("]\n");
        Files.createDirectories(out.toAbsolutePath().getParent());
        Files.writeString(out, b.toString(), StandardCharsets.UTF_8);

        Map<String, Object> meta = new LinkedHashMap<>();
        meta.put("suite", opt.getOrDefault("suite", "?"));
        meta.put("date", LocalDate.now().toString());
        meta.put("commit", opt.getOrDefault("commit", "?"));
        meta.put("dirty", Boolean.parseBoolean(opt.getOrDefault("dirty", "false")));
        meta.put("cpu", cpuModel());
        meta.put("cores", (long) Runtime.getRuntime().availableProcessors());
        meta.put("cpuIsa", NativeCpu.available() ? NativeCpu.isa() : "unavailable: " + NativeCpu.problem());
        meta.put("gpu", Backends.available(Backend.CUDA) ? Gpu.describe() : "none");
        meta.put("jdk", System.getProperty("java.vm.name") + " " + Runtime.version());
        meta.put("os", System.getProperty("os.name") + " " + System.getProperty("os.version"));
        meta.put("memoryBytes", physicalMemory());
        meta.put("loadAverageStart", opt.getOrDefault("load-start", "n/a"));
        meta.put("loadAverageEnd", loadAverage());
        if (opt.containsKey("elapsed-s")) meta.put("elapsedSeconds", Long.parseLong(opt.get("elapsed-s")));
        if (opt.containsKey("command")) meta.put("command", opt.get("command"));
        if (opt.containsKey("note")) meta.put("note", opt.get("note"));
        meta.put("results", (long) all.size());
        Files.writeString(metaPath(out), pretty(meta), StandardCharsets.UTF_8);
        System.out.println("report: wrote " + out + " (" + all.size() + " results) and " + metaPath(out));
    }

    private static long physicalMemory() {
        try {
            var os = ManagementFactory.getOperatingSystemMXBean();
            if (os instanceof com.sun.management.OperatingSystemMXBean s) return s.getTotalMemorySize();
        } catch (Throwable ignored) {
            // not available on this runtime
        }
        return -1;
    }

    static Path metaPath(Path json) {
        String n = json.getFileName().toString();
        return json.resolveSibling(n.replaceFirst("\\.json$", "") + ".meta.json");
    }

    private static String pretty(Map<String, Object> m) {
        StringBuilder b = new StringBuilder("{\n");
        int i = 0;
        for (Map.Entry<String, Object> e : m.entrySet()) {
            b.append("  ");
            Json.quote(b, e.getKey());
            b.append(": ").append(Json.write(e.getValue())).append(++i < m.size() ? ",\n" : "\n");
        }
        return b.append("}\n").toString();
    }

    static List<Object> asList(Object o) {
        if (!(o instanceof List<?> l)) throw new IllegalArgumentException("expected a JSON array of JMH results");
        return new ArrayList<>(l);
    }
}
