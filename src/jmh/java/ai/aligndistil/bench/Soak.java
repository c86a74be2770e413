package ai.aligndistil.bench;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import org.knowm.xchart.BitmapEncoder;
import org.knowm.xchart.XYChart;
import org.knowm.xchart.XYChartBuilder;
import org.knowm.xchart.style.Styler;

import ai.aligndistil.io.AtomicFiles;
import ai.aligndistil.io.Json;
import ai.aligndistil.pipeline.data.JsonLines;

/**
 * The soak run's analysis (benchmarks/soak.sh): resident memory of a training stage every {@code every} optimiser
 * steps, read from the {@code rss_mb} column of its metrics.jsonl, and the growth after warm-up,
 * {@code (max RSS at steps >= warmup - RSS at warmup) / RSS at warmup}, against a bound (2 %).
 *
 * <pre>
 *   Soak report --out R.json --every 50 --bound-pct 2 [--commit C --machine M --command S] NAME=METRICS.jsonl:WARMUP ...
 * </pre>
 * writes R.json, R.png (RSS against step, one line per run) and R.md; exit status 1 when a run breaks the bound.
 */
public final class Soak {
    private Soak() {}

    /** One run: RSS samples and the growth after warm-up. */
    public record Run(String name, long steps, long every, long warmupStep, List<long[]> samples, List<Double> rssMb,
                      double atWarmupMb, double maxAfterMb, double lastMb, double growthPct, double lastGrowthPct, double elapsedS) {
        public Map<String, Object> toJson(double boundPct) {
            Map<String, Object> m = new LinkedHashMap<>();
            m.put("name", name);
            m.put("steps", steps);
            m.put("every", every);
            m.put("warmup_steps", warmupStep);
            List<Object> s = new ArrayList<>();
            for (int i = 0; i < samples.size(); i++) s.add(Map.of("step", samples.get(i)[0], "rss_mb", rssMb.get(i)));
            m.put("samples", s);
            m.put("rss_at_warmup_mb", atWarmupMb);
            m.put("max_rss_after_warmup_mb", maxAfterMb);
            m.put("last_rss_mb", lastMb);
            m.put("growth_after_warmup_pct", growthPct);
            m.put("last_vs_warmup_pct", lastGrowthPct);
            m.put("bound_pct", boundPct);
            m.put("ok", growthPct < boundPct);
            m.put("elapsed_s", elapsedS);
            return m;
        }
    }

    /** The samples at steps every, 2 every, ... (and the last step) and the growth after the sample at {@code warmup}. */
    public static Run analyse(String name, List<Map<String, Object>> metrics, long every, long warmup) {
        List<long[]> steps = new ArrayList<>();
        List<Double> rss = new ArrayList<>();
        double elapsed = 0;
        long last = 0;
        double lastRss = Double.NaN;
        for (Map<String, Object> m : metrics) {
            long step = ((Number) m.get("step")).longValue();
            Object r = m.get("rss_mb");
            if (!(r instanceof Number n)) throw new IllegalArgumentException(name + ": step " + step + " has no rss_mb (not Linux?)");
            last = step;
            lastRss = n.doubleValue();
            if (m.get("elapsed_s") instanceof Number e) elapsed = e.doubleValue();
            if (step % every == 0) {
                steps.add(new long[] {step});
                rss.add(lastRss);
            }
        }
        if (last % every != 0) {
            steps.add(new long[] {last});
            rss.add(lastRss);
        }
        double atWarmup = Double.NaN, max = Double.NEGATIVE_INFINITY;
        for (int i = 0; i < steps.size(); i++) {
            long s = steps.get(i)[0];
            if (s == warmup) atWarmup = rss.get(i);
            if (s >= warmup) max = Math.max(max, rss.get(i));
        }
        if (Double.isNaN(atWarmup)) throw new IllegalArgumentException(name + ": no sample at the warm-up step " + warmup + " (every " + every + ", " + last + " steps)");
        double lastMb = rss.get(rss.size() - 1);
        return new Run(name, last, every, warmup, steps, rss, atWarmup, max, lastMb, 100 * (max - atWarmup) / atWarmup,
                100 * (lastMb - atWarmup) / atWarmup, elapsed);
    }

    public static void main(String[] args) throws IOException {
        if (args.length == 0 || !args[0].equals("report")) {
            System.err.println("usage: Soak report --out R.json --every N --bound-pct B [--commit C --machine M --command S] NAME=METRICS.jsonl:WARMUP ...");
            System.exit(2);
        }
        Map<String, String> o = new LinkedHashMap<>();
        List<String> runs = new ArrayList<>();
        for (int i = 1; i < args.length; i++) {
            if (args[i].startsWith("--")) o.put(args[i].substring(2), args[++i]);
            else runs.add(args[i]);
        }
        long every = Long.parseLong(o.getOrDefault("every", "50"));
        double bound = Double.parseDouble(o.getOrDefault("bound-pct", "2"));
        Path out = Path.of(o.get("out"));
        List<Run> rs = new ArrayList<>();
        for (String r : runs) {
            int eq = r.indexOf('='), colon = r.lastIndexOf(':');
            rs.add(analyse(r.substring(0, eq), JsonLines.read(Path.of(r.substring(eq + 1, colon))), every, Long.parseLong(r.substring(colon + 1))));
        }
        Map<String, Object> j = new LinkedHashMap<>();
        j.put("suite", "soak");
        j.put("date", Instant.now().toString());
        j.put("commit", o.getOrDefault("commit", "unknown"));
        j.put("machine", o.getOrDefault("machine", "unknown"));
        j.put("command", o.getOrDefault("command", ""));
        j.put("jvm", o.getOrDefault("jvm", ""));
        j.put("what", "resident memory (VmRSS) of the training JVM, from the rss_mb column of metrics.jsonl, every " + every
                + " optimiser steps; growth after warm-up = (max RSS at steps >= warm-up - RSS at warm-up) / RSS at warm-up");
        List<Object> list = new ArrayList<>();
        boolean ok = true;
        for (Run r : rs) {
            list.add(r.toJson(bound));
            ok &= r.growthPct() < bound;
        }
        j.put("runs", list);
        j.put("ok", ok);
        AtomicFiles.writeString(out, Json.write(j) + "\n");

        XYChart c = new XYChartBuilder().width(900).height(500).title("Resident memory over a soak run (" + o.getOrDefault("commit", "") + ")")
                .xAxisTitle("optimiser step").yAxisTitle("RSS (MiB)").build();
        c.getStyler().setLegendPosition(Styler.LegendPosition.InsideSE);
        for (Run r : rs) {
            double[] x = new double[r.samples().size()], y = new double[x.length];
            for (int i = 0; i < x.length; i++) {
                x[i] = r.samples().get(i)[0];
                y[i] = r.rssMb().get(i);
            }
            c.addSeries(r.name() + String.format(" (%+.2f %% after step %d)", r.growthPct(), r.warmupStep()), x, y);
        }
        Path png = out.resolveSibling(out.getFileName().toString().replaceFirst("\\.json$", ".png"));
        BitmapEncoder.saveBitmap(c, png.toString().replaceFirst("\\.png$", ""), BitmapEncoder.BitmapFormat.PNG);

        StringBuilder md = new StringBuilder("# Soak run: resident memory over long training runs\n\n");
        md.append("Commit ").append(o.getOrDefault("commit", "?")).append(", ").append(o.getOrDefault("machine", "?")).append(", ").append(j.get("date")).append(".\n");
        md.append("JVM: `").append(o.getOrDefault("jvm", "")).append("`. Command: `").append(o.getOrDefault("command", "")).append("`.\n\n");
        md.append("Resident memory (VmRSS) every ").append(every).append(" optimiser steps; growth after warm-up = (max RSS at steps >= warm-up - RSS at warm-up) / RSS at warm-up, bound ")
                .append(bound).append(" %.\n\n");
        md.append("| run | steps | time (s) | warm-up step | RSS at warm-up (MiB) | max after (MiB) | last (MiB) | growth after warm-up | last vs warm-up | within bound |\n");
        md.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
        for (Run r : rs)
            md.append(String.format("| %s | %d | %.0f | %d | %.1f | %.1f | %.1f | %+.2f %% | %+.2f %% | %s |%n", r.name(), r.steps(), r.elapsedS(), r.warmupStep(),
                    r.atWarmupMb(), r.maxAfterMb(), r.lastMb(), r.growthPct(), r.lastGrowthPct(), r.growthPct() < bound ? "yes" : "**no**"));
        md.append("\n![RSS against step](").append(png.getFileName()).append(")\n");
        Path mdFile = out.resolveSibling(out.getFileName().toString().replaceFirst("\\.json$", ".md"));
        AtomicFiles.writeString(mdFile, md.toString());
        System.err.println("soak: " + out + (ok ? ": every run within " : ": a run breaks ") + bound + " % growth after warm-up");
        System.exit(ok ? 0 : 1);
    }
}
