package ai.aligndistil.bench;

import java.awt.Color;
import java.awt.Font;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Objects;
import java.util.TreeMap;

import org.knowm.xchart.BitmapEncoder;
import org.knowm.xchart.CategoryChart;
import org.knowm.xchart.CategoryChartBuilder;
import org.knowm.xchart.CategorySeries;
import org.knowm.xchart.style.Styler;

import ai.aligndistil.io.Json;

/**
 * Turns JMH JSON from the benchmark suites into results you can read and chart (benchmarks/render.sh):
 * <pre>
 *   Report slug|merge|gpu ...                   see {@link Results} (no chart library needed: runs on the GPU bundle too)
 *   Report render F.json...                     F.md (tables, goals) and F.png (charts) next to each file
 *   Report speedup F.json                       "fused/libtorch speedup V=151936 f32 1-thread: <X>x"
 * </pre>
 * Every time is a median: SampleTime benchmarks (ms-scale calls, every call timed) use JMH's p50 over all calls;
 * AverageTime benchmarks (ns-scale calls) the median of the iteration scores. Ratios are taken only between results
 * of the same file (one run, one machine).
 */
public final class Report {
    private Report() {}

    public static void main(String[] args) throws IOException {
        if (args.length == 0) usage();
        switch (args[0]) {
            case "slug", "merge", "gpu" -> Results.main(args);
            case "render" -> {
                for (int i = 1; i < args.length; i++) render(Path.of(args[i]));
            }
            case "speedup" -> {
                List<Result> rs = load(Path.of(args[1]));
                System.out.print(speedupDetail(rs));
                System.out.println(speedupLine(rs));
            }
            default -> usage();
        }
    }

    private static void usage() {
        System.err.println("usage: Report slug cpu|gpu | merge --suite S --out F.json --commit C [...] parts.json... | render F.json... | speedup F.json");
        System.exit(2);
    }

    // ------------------------------------------------------------------------------------------ results

    /** One JMH result, reduced to what the tables need. */
    record Result(String cls, String method, Map<String, String> params, double medianNs, double errorNs, long samples,
                  Map<String, Double> secondary, Map<String, String> secondaryUnits) {
        String p(String k, String dflt) { return params.getOrDefault(k, dflt); }
        int i(String k, int dflt) { return Integer.parseInt(p(k, Integer.toString(dflt))); }
        double sec(String suffix) {
            for (Map.Entry<String, Double> e : secondary.entrySet()) if (e.getKey().endsWith(suffix)) return e.getValue();
            return Double.NaN;
        }
    }

    @SuppressWarnings("unchecked")
    static List<Result> load(Path p) throws IOException {
        List<Result> out = new ArrayList<>();
        for (Object o : Results.asList(Json.parse(Files.readString(p)))) {
            Map<String, Object> r = (Map<String, Object>) o;
            String bench = (String) r.get("benchmark");
            int dot = bench.lastIndexOf('.');
            String method = bench.substring(dot + 1);
            String cls = bench.substring(0, dot);
            cls = cls.substring(cls.lastIndexOf('.') + 1);
            Map<String, String> params = new TreeMap<>();
            Object ps = r.get("params");
            if (ps instanceof Map<?, ?> m) for (Map.Entry<?, ?> e : m.entrySet()) params.put(String.valueOf(e.getKey()), String.valueOf(e.getValue()));
            Map<String, Object> pm = (Map<String, Object>) r.get("primaryMetric");
            String unit = (String) pm.get("scoreUnit");
            double f = toNs(unit);
            String mode = (String) r.get("mode");
            double median;
            long samples;
            if ("sample".equals(mode)) {
                Map<String, Object> pct = (Map<String, Object>) pm.get("scorePercentiles");
                median = num(pct.get("50.0")) * f;
                samples = 0;
                Object hist = pm.get("rawDataHistogram");
                if (hist instanceof List<?> forks) for (Object fork : forks) for (Object it : (List<?>) fork) for (Object pair : (List<?>) it) samples += (long) num(((List<?>) pair).get(1));
            } else {
                List<Double> its = new ArrayList<>();
                Object raw = pm.get("rawData");
                if (raw instanceof List<?> forks) for (Object fork : forks) for (Object v : (List<?>) fork) its.add(num(v) * f);
                its.sort(Double::compare);
                median = its.isEmpty() ? num(pm.get("score")) * f : (its.size() % 2 == 1 ? its.get(its.size() / 2)
                        : 0.5 * (its.get(its.size() / 2 - 1) + its.get(its.size() / 2)));
                samples = its.size();
            }
            double err = num(pm.get("scoreError")) * f;
            Map<String, Double> sec = new LinkedHashMap<>();
            Map<String, String> secUnits = new LinkedHashMap<>();
            Object sm = r.get("secondaryMetrics");
            if (sm instanceof Map<?, ?> m) {
                for (Map.Entry<?, ?> e : m.entrySet()) {
                    Map<String, Object> v = (Map<String, Object>) e.getValue();
                    sec.put(String.valueOf(e.getKey()), num(v.get("score")));
                    secUnits.put(String.valueOf(e.getKey()), String.valueOf(v.get("scoreUnit")));
                }
            }
            out.add(new Result(cls, method, params, median, err, samples, sec, secUnits));
        }
        return out;
    }

    static double num(Object o) {
        if (o instanceof Number n) return n.doubleValue();
        if (o instanceof String s) {
            try {
                return Double.parseDouble(s);
            } catch (NumberFormatException e) {
                return Double.NaN;
            }
        }
        return Double.NaN;
    }

    static double toNs(String unit) {
        String u = unit == null ? "" : unit.replace("/op", "");
        return switch (u) {
            case "s" -> 1e9;
            case "ms" -> 1e6;
            case "us" -> 1e3;
            case "ns" -> 1.0;
            default -> Double.NaN;
        };
    }

    // ------------------------------------------------------------------------------------------ the CPU suite

    static int esize(String dtype) { return dtype.equals("f32") ? 4 : 2; }

    static long elements(Result r) { return (long) r.i("tokens", 1) * r.i("vocab", 1); }

    /** Effective bandwidth in GB/s: 3 input rows read + 1 gradient row written (gradient in the input dtype). */
    static double gbps(Result r) {
        return elements(r) * 4.0 * esize(r.p("dtype", "f32")) / r.medianNs();
    }

    static String shapeKey(Result r) { return r.p("vocab", "?") + "/" + r.p("tokens", "?") + "/" + r.p("dtype", "?"); }

    static Result find(List<Result> rs, String method, String vocab, String tokens, String dtype, String threads) {
        return find(rs, method, vocab, tokens, dtype, threads, null);
    }

    /** The first result matching every non-null filter; {@code malloc} applies to libtorch results only. */
    static Result find(List<Result> rs, String method, String vocab, String tokens, String dtype, String threads, String malloc) {
        for (Result r : rs) {
            if (!r.method().equals(method)) continue;
            if (vocab != null && !r.p("vocab", "").equals(vocab)) continue;
            if (tokens != null && !r.p("tokens", "").equals(tokens)) continue;
            if (dtype != null && !r.p("dtype", "").equals(dtype)) continue;
            if (threads != null && !r.p("threads", "1").equals(threads)) continue;
            if (malloc != null && !r.p("malloc", "default").equals(malloc)) continue;
            return r;
        }
        return null;
    }

    static final String[] MALLOCS = {"default", "no-mmap"};

    /** The faster of the libtorch runs (any allocator setting) at a shape and thread count, or null. */
    static Result bestTorch(List<Result> rs, String vocab, String tokens, String dtype, String threads) {
        Result best = null;
        for (String m : MALLOCS) {
            Result t = find(rs, "libtorch", vocab, tokens, dtype, threads, m);
            if (t != null && (best == null || t.medianNs() < best.medianNs())) best = t;
        }
        return best;
    }

    /**
     * The quick mode's last line. The baseline is the faster libtorch run of the same file (glibc malloc as installed,
     * or tuned not to unmap large blocks), so the number never profits from the baseline's page faults.
     */
    static String speedupLine(List<Result> rs) {
        Result f = null, t = null;
        for (String tokens : new String[] {"64", "512", null}) {
            f = find(rs, "fused", "151936", tokens, "f32", "1");
            t = bestTorch(rs, "151936", tokens, "f32", "1");
            if (f != null && t != null) break;
        }
        if (f == null || t == null) return "fused/libtorch speedup V=151936 f32 1-thread: n/a (no fused and libtorch results at that shape)";
        return String.format(Locale.ROOT, "fused/libtorch speedup V=151936 f32 1-thread: %.2fx", t.medianNs() / f.medianNs());
    }

    /** One line per libtorch allocator setting at the quick-mode shape (printed before the last line). */
    static String speedupDetail(List<Result> rs) {
        StringBuilder b = new StringBuilder();
        Result f = find(rs, "fused", "151936", "64", "f32", "1");
        if (f == null) return "";
        b.append(String.format(Locale.ROOT, "fused V=151936 64 tokens f32 1-thread: %.2f ms (%.2f ns/element)%n", f.medianNs() / 1e6, f.medianNs() / elements(f)));
        for (String m : MALLOCS) {
            Result t = find(rs, "libtorch", "151936", "64", "f32", "1", m);
            if (t != null)
                b.append(String.format(Locale.ROOT, "libtorch (glibc malloc %s): %.1f ms -> fused is %.2fx faster%n", m, t.medianNs() / 1e6, t.medianNs() / f.medianNs()));
        }
        return b.toString();
    }

    static void render(Path json) throws IOException {
        List<Result> rs = load(json);
        String base = json.getFileName().toString().replaceFirst("\\.json$", "");
        Path md = json.resolveSibling(base + ".md");
        Path png = json.resolveSibling(base + ".png");
        StringBuilder b = new StringBuilder();
        b.append("# ").append(base).append("\n\n");
        appendMeta(b, json);
        boolean any = false;
        if (rs.stream().anyMatch(r -> r.cls().equals("FusedLossBench") || r.cls().equals("FusedLossCudaBench"))) {
            renderFused(b, rs, png);
            any = true;
        }
        if (rs.stream().anyMatch(r -> r.cls().equals("CallOverheadBench"))) {
            renderOverhead(b, rs);
            any = true;
        }
        if (rs.stream().anyMatch(r -> r.cls().equals("CudaEventBench"))) {
            renderEvents(b, rs, json, png);
            any = true;
        }
        if (!any) b.append("No results of a known suite in this file.\n");
        Files.writeString(md, b.toString(), StandardCharsets.UTF_8);
        System.out.println("report: wrote " + md + (Files.exists(png) ? " and " + png : ""));
    }

    @SuppressWarnings("unchecked")
    private static void appendMeta(StringBuilder b, Path json) throws IOException {
        Path mp = Results.metaPath(json);
        if (!Files.exists(mp)) {
            b.append("(no metadata file ").append(mp.getFileName()).append(")\n\n");
            return;
        }
        Map<String, Object> m = Json.parseObject(Files.readString(mp));
        b.append("| | |\n|---|---|\n");
        for (String k : new String[] {"suite", "date", "commit", "dirty", "cpu", "cores", "cpuIsa", "gpu", "jdk", "os", "loadAverageStart", "loadAverageEnd", "elapsedSeconds", "command", "note"}) {
            if (m.containsKey(k)) b.append("| ").append(k).append(" | ").append(String.valueOf(m.get(k)).replace("|", "\\|")).append(" |\n");
        }
        b.append("\nAll times are medians (JMH SampleTime p50 over every call; AverageTime: median of the iteration scores). ")
         .append("Effective GB/s counts 3 input rows read + 1 gradient row written (gradient in the input dtype). ")
         .append("Ratios compare results of this file only (one run, one machine). On a shared, noisy machine compare ratios, not absolute times.\n\n");
    }

    private static String f(String fmt, double v) { return Double.isFinite(v) ? String.format(Locale.ROOT, fmt, v) : "n/a"; }

    private static void renderFused(StringBuilder b, List<Result> rs, Path png) throws IOException {
        List<Result> fused = rs.stream().filter(r -> r.method().equals("fused")).toList();
        List<Result> torch = rs.stream().filter(r -> r.method().equals("libtorch")).toList();

        // ---- goals
        b.append("## Goals (issue 4), from this run\n\n| goal | measured | status |\n|---|---|---|\n");
        for (String tokens : new String[] {"64", "512"}) {
            Result f1 = find(rs, "fused", "151936", tokens, "f32", "1");
            for (String m : MALLOCS) {
                Result t1 = find(rs, "libtorch", "151936", tokens, "f32", "1", m);
                if (f1 == null || t1 == null) continue;
                double s = t1.medianNs() / f1.medianNs();
                b.append("| >= 5x faster than libtorch (glibc malloc ").append(m).append("), V=151936 f32 1 thread, ").append(tokens).append(" tokens | ")
                 .append(f("%.2fx", s)).append(" | ").append(s >= 5 ? "met" : "missed (" + f("%.2fx", s) + " of 5x)").append(" |\n");
            }
        }
        for (String dt : new String[] {"f32", "bf16"}) {
            double worst = Double.NaN, best = Double.NaN;
            String at = "";
            for (Result r : fused) {
                if (!r.p("threads", "1").equals("1") || !r.p("dtype", "").equals(dt)) continue;
                double ns = r.medianNs() / elements(r);
                if (!(ns <= worst)) { worst = ns; at = shapeKey(r); }
                if (!(ns >= best)) best = ns;
            }
            if (Double.isFinite(worst))
                b.append("| <= 2.5 ns/element/core single-threaded, ").append(dt).append(" | ").append(f("%.2f", best)).append(" to ").append(f("%.2f", worst))
                 .append(" ns (worst at ").append(at).append(") | ").append(worst <= 2.5 ? "met" : "missed (worst " + f("%.2fx", worst / 2.5) + " the bound)").append(" |\n");
        }
        double worstScale = Double.NaN, bestScale = Double.NaN;
        String scaleAt = "";
        for (Result r2 : fused) {
            if (!r2.p("threads", "1").equals("2")) continue;
            Result r1 = find(fused, "fused", r2.p("vocab", ""), r2.p("tokens", ""), r2.p("dtype", ""), "1");
            if (r1 == null) continue;
            double s = r1.medianNs() / r2.medianNs();
            if (!(s >= worstScale)) { worstScale = s; scaleAt = shapeKey(r2); }
            if (!(s <= bestScale)) bestScale = s;
        }
        if (Double.isFinite(worstScale))
            b.append("| 2 threads >= 1.7x one thread | ").append(f("%.2fx", worstScale)).append(" to ").append(f("%.2fx", bestScale)).append(" (worst at ").append(scaleAt)
             .append(") | ").append(worstScale >= 1.7 ? "met" : "missed on some shapes").append(" |\n");
        b.append("\nPer-call overhead and allocation: see the overhead suite's file.\n\n");

        // ---- main table
        b.append("## Fused loss (forward + gradient) vs libtorch composed with autograd\n\n");
        b.append("libtorch runs twice: with glibc malloc as installed (`default`: every tensor above 32 MiB is its own mmap, so each call ")
         .append("page-faults its intermediates back in) and with `GLIBC_TUNABLES` that keep freed blocks (`no-mmap`). ")
         .append("Speedups are libtorch median / fused median at the same shape and thread count.\n\n");
        b.append("| V | tokens | dtype | threads | fused ms | ns/elem | ns/elem x threads | GB/s | 2t/1t | libtorch ms | libtorch no-mmap ms | speedup | speedup vs no-mmap |\n");
        b.append("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        List<Result> sorted = new ArrayList<>(fused);
        sorted.sort((x, y) -> {
            int c = Integer.compare(x.i("vocab", 0), y.i("vocab", 0));
            if (c == 0) c = Integer.compare(x.i("tokens", 0), y.i("tokens", 0));
            if (c == 0) c = y.p("dtype", "").compareTo(x.p("dtype", ""));
            if (c == 0) c = Integer.compare(x.i("threads", 1), y.i("threads", 1));
            return c;
        });
        for (Result r : sorted) {
            String th = r.p("threads", "1");
            Result td = find(torch, "libtorch", r.p("vocab", ""), r.p("tokens", ""), r.p("dtype", ""), th, "default");
            Result tn = find(torch, "libtorch", r.p("vocab", ""), r.p("tokens", ""), r.p("dtype", ""), th, "no-mmap");
            Result one = th.equals("1") ? null : find(fused, "fused", r.p("vocab", ""), r.p("tokens", ""), r.p("dtype", ""), "1");
            double ns = r.medianNs() / elements(r);
            b.append("| ").append(r.p("vocab", "")).append(" | ").append(r.p("tokens", "")).append(" | ").append(r.p("dtype", "")).append(" | ").append(th)
             .append(" | ").append(f("%.2f", r.medianNs() / 1e6)).append(" | ").append(f("%.2f", ns)).append(" | ").append(f("%.2f", ns * Integer.parseInt(th)))
             .append(" | ").append(f("%.1f", gbps(r))).append(" | ").append(one == null ? "" : f("%.2fx", one.medianNs() / r.medianNs()))
             .append(" | ").append(td == null ? "n/a" : f("%.1f", td.medianNs() / 1e6)).append(" | ").append(tn == null ? "n/a" : f("%.1f", tn.medianNs() / 1e6))
             .append(" | ").append(td == null ? "n/a" : f("%.2fx", td.medianNs() / r.medianNs()))
             .append(" | ").append(tn == null ? "n/a" : f("%.2fx", tn.medianNs() / r.medianNs())).append(" |\n");
        }
        b.append("\n").append(speedupDetail(rs).replace("\n", "  \n")).append(speedupLine(rs)).append(" (against the faster libtorch run)\n\n");

        List<Result> ref = rs.stream().filter(r -> r.method().equals("reference")).toList();
        if (!ref.isEmpty()) {
            b.append("## Java float64 reference (small shapes)\n\n| V | tokens | dtype | reference ms | ns/elem | fused 1-thread ms | fused speedup |\n|---:|---:|---|---:|---:|---:|---:|\n");
            for (Result r : ref) {
                Result f1 = find(fused, "fused", r.p("vocab", ""), r.p("tokens", ""), r.p("dtype", ""), "1");
                b.append("| ").append(r.p("vocab", "")).append(" | ").append(r.p("tokens", "")).append(" | ").append(r.p("dtype", ""))
                 .append(" | ").append(f("%.1f", r.medianNs() / 1e6)).append(" | ").append(f("%.1f", r.medianNs() / elements(r)))
                 .append(" | ").append(f1 == null ? "n/a" : f("%.2f", f1.medianNs() / 1e6)).append(" | ").append(f1 == null ? "n/a" : f("%.0fx", r.medianNs() / f1.medianNs())).append(" |\n");
            }
            b.append("\n");
        }
        List<Result> var = rs.stream().filter(r -> r.method().equals("variant")).toList();
        if (!var.isEmpty()) {
            b.append("## Every variant, fused CPU kernel\n\n| variant | V | tokens | dtype | threads | ms | ns/elem | GB/s |\n|---|---:|---:|---|---:|---:|---:|---:|\n");
            for (Result r : var)
                b.append("| ").append(r.p("variant", "")).append(" | ").append(r.p("vocab", "")).append(" | ").append(r.p("tokens", "")).append(" | ").append(r.p("dtype", ""))
                 .append(" | ").append(r.p("threads", "1")).append(" | ").append(f("%.2f", r.medianNs() / 1e6)).append(" | ").append(f("%.2f", r.medianNs() / elements(r)))
                 .append(" | ").append(f("%.1f", gbps(r))).append(" |\n");
            b.append("\n(gkd reads no second teacher: its GB/s still counts 3 input rows, so it is overstated by up to a third.)\n\n");
        }
        List<Result> cuda = rs.stream().filter(r -> r.method().equals("cuda")).toList();
        if (!cuda.isEmpty()) {
            b.append("## CUDA kernel, device-resident inputs, host-timed launch + synchronize\n\n| V | tokens | dtype | ms | GB/s | vs fused CPU 1 thread |\n|---:|---:|---|---:|---:|---:|\n");
            for (Result r : cuda) {
                Result f1 = find(fused, "fused", r.p("vocab", ""), r.p("tokens", ""), r.p("dtype", ""), "1");
                b.append("| ").append(r.p("vocab", "")).append(" | ").append(r.p("tokens", "")).append(" | ").append(r.p("dtype", ""))
                 .append(" | ").append(f("%.3f", r.medianNs() / 1e6)).append(" | ").append(f("%.0f", gbps(r)))
                 .append(" | ").append(f1 == null ? "n/a" : f("%.0fx", f1.medianNs() / r.medianNs())).append(" |\n");
            }
            b.append("\n");
        }
        if (!fused.isEmpty()) {
            chartFused(sorted, torch, png);
            b.append("![chart](").append(png.getFileName()).append(")\n");
        }
    }

    private static void chartFused(List<Result> fused, List<Result> torch, Path png) throws IOException {
        List<String> shapes = new ArrayList<>();
        for (Result r : fused) if (!shapes.contains(shapeKey(r))) shapes.add(shapeKey(r));
        record Series(String name, String method, String threads, String malloc) {}
        List<Series> series = List.of(new Series("fused 1t", "fused", "1", null), new Series("fused 2t", "fused", "2", null),
                new Series("libtorch 1t", "libtorch", "1", "default"), new Series("libtorch 2t", "libtorch", "2", "default"),
                new Series("libtorch no-mmap 1t", "libtorch", "1", "no-mmap"), new Series("libtorch no-mmap 2t", "libtorch", "2", "no-mmap"));
        List<Result> all = new ArrayList<>(fused);
        all.addAll(torch);
        CategoryChart c1 = chart("ns per element (log scale, lower is better)", "ns / element");
        CategoryChart c2 = chart("effective GB/s (3 reads + 1 write)", "GB/s");
        CategoryChart c3 = chart("fused speedup over libtorch, same threads", "x");
        for (Series s : series) {
            List<Double> ns = new ArrayList<>(), g = new ArrayList<>();
            for (String k : shapes) {
                Result r = pick(all, s.method(), k, s.threads(), s.malloc());
                ns.add(r == null ? null : r.medianNs() / elements(r));
                g.add(r == null ? null : gbps(r));
            }
            if (ns.stream().allMatch(Objects::nonNull)) c1.addSeries(s.name(), shapes, ns); // log axis: no zero bars
            if (g.stream().anyMatch(Objects::nonNull)) c2.addSeries(s.name(), shapes, zeros(g));
        }
        for (String th : new String[] {"1", "2"}) {
            for (String m : MALLOCS) {
                List<Double> sp = new ArrayList<>();
                for (String k : shapes) {
                    Result f = pick(all, "fused", k, th, null), t = pick(all, "libtorch", k, th, m);
                    sp.add(f == null || t == null ? null : t.medianNs() / f.medianNs());
                }
                if (sp.stream().anyMatch(Objects::nonNull)) c3.addSeries("vs libtorch " + (m.equals("default") ? "" : m + " ") + th + "t", shapes, zeros(sp));
            }
        }
        CategorySeries goal = c3.addSeries("goal 5x", shapes, shapes.stream().map(k -> 5.0).toList());
        goal.setChartCategorySeriesRenderStyle(CategorySeries.CategorySeriesRenderStyle.Line);
        goal.setMarker(org.knowm.xchart.style.markers.SeriesMarkers.NONE);
        goal.setLineColor(Color.BLACK);
        c1.getStyler().setYAxisLogarithmic(true);
        c1.getStyler().setYAxisMin(0.5); // bars of a category chart start at the axis minimum: keep it positive on a log axis
        BitmapEncoder.saveBitmap(List.of(c1, c2, c3), 1, 3, png.toString().replaceFirst("\\.png$", ""), BitmapEncoder.BitmapFormat.PNG);
    }

    private static List<Double> zeros(List<Double> a) {
        return a.stream().map(v -> v == null ? 0.0 : v).toList();
    }

    private static Result pick(List<Result> rs, String method, String shape, String threads, String malloc) {
        for (Result r : rs)
            if (r.method().equals(method) && shapeKey(r).equals(shape) && r.p("threads", "1").equals(threads)
                    && (malloc == null || r.p("malloc", "default").equals(malloc))) return r;
        return null;
    }

    private static CategoryChart chart(String title, String yTitle) {
        CategoryChart c = new CategoryChartBuilder().width(560).height(420).title(title).xAxisTitle("V / tokens / dtype").yAxisTitle(yTitle).build();
        Styler s = c.getStyler();
        c.getStyler().setXAxisLabelRotation(60);
        c.getStyler().setLegendPosition(Styler.LegendPosition.InsideNW);
        c.getStyler().setAxisTickLabelsFont(new Font(Font.SANS_SERIF, Font.PLAIN, 10));
        s.setChartTitleFont(new Font(Font.SANS_SERIF, Font.BOLD, 12));
        s.setLegendFont(new Font(Font.SANS_SERIF, Font.PLAIN, 10));
        s.setSeriesColors(new Color[] {new Color(0x1f77b4), new Color(0x2ca02c), new Color(0xd62728), new Color(0xff7f0e), new Color(0x9467bd), new Color(0x8c564b), new Color(0x7f7f7f)});
        return c;
    }

    // ------------------------------------------------------------------------------------------ overhead suite

    private static void renderOverhead(StringBuilder b, List<Result> rs) {
        b.append("## Crossing into native code (tiny V, host overhead, allocation)\n\n");
        b.append("| benchmark | V | tokens | threads | ns/op (median) | +-99.9% | alloc B/op (gc.alloc.rate.norm) |\n|---|---:|---:|---:|---:|---:|---:|\n");
        Result tiny1 = null, tiny0 = null;
        for (Result r : rs) {
            if (!r.cls().equals("CallOverheadBench")) continue;
            if (r.method().equals("fusedTiny") && r.p("tokens", "").equals("1") && r.p("threads", "1").equals("1")) tiny1 = r;
            if (r.method().equals("fusedTiny") && r.p("tokens", "").equals("1") && r.p("threads", "1").equals("0")) tiny0 = r;
            b.append("| ").append(r.method()).append(" | ").append(r.p("vocab", "")).append(" | ").append(r.p("tokens", "")).append(" | ").append(r.p("threads", ""))
             .append(" | ").append(f("%.1f", r.medianNs())).append(" | ").append(f("%.1f", r.errorNs()))
             .append(" | ").append(f("%.3f", r.sec("gc.alloc.rate.norm"))).append(" |\n");
        }
        if (tiny1 != null) {
            double alloc = tiny1.sec("gc.alloc.rate.norm");
            b.append("\n| goal | measured | status |\n|---|---|---|\n");
            b.append("| per-call host overhead < 2 us (upper bound: a whole call at V=8, 1 token, threads(1)) | ").append(f("%.0f ns", tiny1.medianNs()))
             .append(" | ").append(tiny1.medianNs() < 2000 ? "met" : "missed").append(" |\n");
            if (tiny0 != null)
                b.append("| same with the batch's default threads (0 = library pool size) | ").append(f("%.0f ns", tiny0.medianNs()))
                 .append(" | ").append(tiny0.medianNs() < 2000 ? "met" : "missed").append(" |\n");
            b.append("| 0 B/op on the hot path | ").append(f("%.3f B/op", alloc)).append(" | ")
             .append(Double.isNaN(alloc) ? "not measured (run with -prof gc)" : alloc < 0.5 ? "met" : "missed").append(" |\n");
        }
        b.append("\n");
    }

    // ------------------------------------------------------------------------------------------ GPU events suite

    @SuppressWarnings("unchecked")
    private static void renderEvents(StringBuilder b, List<Result> rs, Path json, Path png) throws IOException {
        Map<String, Map<String, Object>> med = new LinkedHashMap<>();
        Path events = json.resolveSibling(json.getFileName().toString().replaceFirst("\\.json$", "") + ".events.jsonl");
        if (Files.exists(events)) {
            for (String line : Files.readAllLines(events)) {
                if (line.isBlank()) continue;
                Map<String, Object> m = Json.parseObject(line);
                String key = m.get("benchmark") + "|" + m.getOrDefault("vocab", "") + "|" + m.getOrDefault("tokens", "") + "|" + m.getOrDefault("dtype", "") + "|" + m.getOrDefault("copyMiB", "");
                med.put(key, m);
            }
        }
        double copyGbps = Double.NaN;
        List<String[]> rows = new ArrayList<>();
        List<String> labels = new ArrayList<>();
        List<Double> bws = new ArrayList<>();
        for (Result r : rs) {
            if (!r.cls().equals("CudaEventBench")) continue;
            double us = r.sec("deviceUs") / r.sec("launches");
            String key = r.method() + "|" + r.p("vocab", "") + "|" + r.p("tokens", "") + "|" + r.p("dtype", "") + "|" + r.p("copyMiB", "");
            Map<String, Object> m = med.get(key);
            String how = "mean";
            if (m != null && m.get("medianUs") != null) { us = num(m.get("medianUs")); how = "median"; }
            double bytes = r.method().equals("copy") ? 2.0 * r.i("copyMiB", 0) * (1 << 20) : elements(r) * 4.0 * esize(r.p("dtype", "f32"));
            double gb = bytes / (us * 1e3);
            if (r.method().equals("copy")) copyGbps = gb;
            String label = r.method().equals("copy") ? "D2D copy " + r.p("copyMiB", "") + " MiB" : "kernel " + shapeKey(r);
            labels.add(label);
            bws.add(gb);
            rows.add(new String[] {label, m == null ? "" : String.valueOf(m.get("sets")), f("%.1f", us), how, f("%.0f", gb), ""});
        }
        b.append("## CUDA kernel, device time (CUDA events, rotated input sets: cold L2)\n\n");
        b.append("| what | sets | device us / launch | stat | effective GB/s | % of D2D copy |\n|---|---:|---:|---|---:|---:|\n");
        for (int i = 0; i < rows.size(); i++) {
            String[] x = rows.get(i);
            x[5] = f("%.0f%%", 100 * bws.get(i) / copyGbps);
            b.append("| ").append(String.join(" | ", x)).append(" |\n");
        }
        b.append("\n");
        if (!labels.isEmpty()) {
            CategoryChart c = chart("effective GB/s, CUDA events, cold L2", "GB/s");
            c.getStyler().setLegendVisible(false);
            c.addSeries("GB/s", labels, bws);
            BitmapEncoder.saveBitmap(c, png.toString().replaceFirst("\\.png$", ""), BitmapEncoder.BitmapFormat.PNG);
            b.append("![chart](").append(png.getFileName()).append(")\n");
        }
    }
}
