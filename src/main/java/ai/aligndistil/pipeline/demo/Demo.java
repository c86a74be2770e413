package ai.aligndistil.pipeline.demo;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.LocalDateTime;
import java.time.format.DateTimeFormatter;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import ai.aligndistil.io.Json;
import ai.aligndistil.model.HfCheckpoint;
import ai.aligndistil.pipeline.config.Options;
import ai.aligndistil.pipeline.config.PipelineException;
import ai.aligndistil.pipeline.data.JsonLines;
import ai.aligndistil.pipeline.report.DemoReport;
import ai.aligndistil.pipeline.report.FrontierReport;
import ai.aligndistil.pipeline.stages.DistillStage;
import ai.aligndistil.pipeline.stages.DpoStage;
import ai.aligndistil.pipeline.stages.EvalStage;
import ai.aligndistil.pipeline.stages.SftStage;
import ai.aligndistil.pipeline.stages.Stage;
import ai.aligndistil.pipeline.stages.TaskFiles;

/**
 * {@code demo}: the whole method on the built-in task, over several task seeds, as reward-KL frontiers. For each
 * seed ({@code --seeds}, default 1,2,3): generate the task, train the initial policy ({@code sft}), sample and label
 * the preference pairs, train DPO at beta 0.03, 0.1 and 0.3 (the 0.1 model is the teacher) and reverse DPO, then
 * distil: off-policy AlignDistil at beta2 0.3, 1, 3, 10, on-policy at 1, 3, 15, the constant weights 1 and 2,
 * on-policy GKD to the DPO model, and the official-beta2 runs again with {@code --positions official}. Every run
 * records a curve (true reward and KL to the initial policy every few steps: its frontier points) and every
 * AlignDistil run its regime figures. {@link FrontierReport} then aggregates the seeds (mean and standard error),
 * scores the claims and writes {@code results.json}, {@code report.md} and the frontier chart. Deterministic for a
 * set of seeds on the same machine.
 */
public final class Demo {
    private Demo() {}

    public static Options.Spec spec() {
        return new Options.Spec("demo")
                .value("out", null, "output folder (default: aligndistil-demo-DATE-TIME in the current folder)")
                .value("seeds", "1,2,3", "task seeds, comma-separated; every figure is reported as mean ± standard error over them")
                .value("seed", null, "shorthand for --seeds N (one task seed)")
                .value("min-new-tokens", 1, "EOS is impossible for the first N sampled tokens of every response (rollouts, curves, evaluation; the official vLLM sampler's min_tokens = 1), tokens")
                .value("jobs", 2, "seeds trained at the same time, each on its own thread (results do not depend on it), seeds")
                .flag("tiny", false, "one seed, tiny task and the smallest sweep (a smoke test for CI, not a result)")
                .flag("quiet", false, "no progress bars from the stages (the per-stage progress lines stay)")
                .value("device", "auto", "where every stage's models run: auto (CUDA when it answers, else the CPU; logged), cpu, cuda or cuda:N");
    }

    /** One training run of the demo: its folder name, what it is, and the method (chart line) it belongs to. */
    public record Run(String name, String stage, String mode, String variant, Double beta, Double beta2, String positions, String method) {
        FrontierReport.RunInfo info() {
            String w = stage.equals("dpo") ? "DPO, beta " + fmt(beta) + (name.equals("dpo") ? " (the teacher of every distillation run)" : "")
                    : mode + " " + variant + (beta2 == null ? "" : ", beta2 " + fmt(beta2)) + ", --positions " + positions;
            return new FrontierReport.RunInfo(name, method, w);
        }

        static Run dpo(double beta, String name) {
            return new Run(name, "dpo", null, null, beta, null, null, FrontierReport.DPO);
        }

        static Run distill(String name, String mode, String variant, Double beta2, String positions, String method) {
            return new Run(name, "distill", mode, variant, null, beta2, positions, method);
        }
    }

    /** The runs of a seed: the full sweeps, or (tiny) the smallest set that still exercises every method. */
    public static List<Run> runs(boolean tiny) {
        List<Run> l = new ArrayList<>();
        for (double b : tiny ? new double[] {0.1} : new double[] {0.03, 0.1, 0.3}) l.add(Run.dpo(b, b == 0.1 ? "dpo" : "dpo-b" + fmt(b)));
        for (double b2 : tiny ? new double[] {10} : new double[] {0.3, 1, 3, 10})
            l.add(Run.distill(b2 == 10 ? "aligndistil-off" : "aligndistil-off-b" + fmt(b2), "off-policy", "aligndistil", b2, "paper", FrontierReport.AD_OFF));
        for (double b2 : tiny ? new double[] {15} : new double[] {1, 3, 15})
            l.add(Run.distill(b2 == 15 ? "aligndistil-on" : "aligndistil-on-b" + fmt(b2), "on-policy", "aligndistil", b2, "paper", FrontierReport.AD_ON));
        // Constant weights 1 and 2: contrast with beta / beta2 = 1 and 2 (beta 0.1).
        l.add(Run.distill("contrast-w1-off", "off-policy", "contrast", 0.1, "paper", FrontierReport.W1));
        l.add(Run.distill("contrast-w2-off", "off-policy", "contrast", 0.05, "paper", FrontierReport.W2));
        l.add(Run.distill("gkd-on", "on-policy", "gkd", null, "paper", FrontierReport.GKD));
        l.add(Run.distill("aligndistil-off-official-pos", "off-policy", "aligndistil", 10.0, "official", FrontierReport.AD_OFF_OFFICIAL));
        l.add(Run.distill("aligndistil-on-official-pos", "on-policy", "aligndistil", 15.0, "official", FrontierReport.AD_ON_OFFICIAL));
        return l;
    }

    static String fmt(double d) {
        return d == Math.rint(d) ? Long.toString((long) d) : Double.toString(d);
    }

    /** The seeds of the options: --seed N wins over --seeds; --tiny keeps the first. */
    static List<Long> seeds(Options o) {
        List<Long> s = new ArrayList<>();
        String spec = o.has("seed") ? o.str("seed") : o.require("seeds");
        for (String p : spec.split(",")) {
            p = p.trim();
            if (p.isEmpty()) continue;
            try {
                long v = Long.parseLong(p);
                if (!s.contains(v)) s.add(v);
            } catch (NumberFormatException e) {
                throw PipelineException.usage("demo: --seeds expects integers separated by commas, got '" + spec + "'");
            }
        }
        if (s.isEmpty()) throw PipelineException.usage("demo: --seeds names no seed");
        if (o.bool("tiny")) return List.of(s.get(0));
        return s;
    }

    public static int run(Options o, PrintStream out, PrintStream err) throws IOException {
        long t0 = System.nanoTime();
        boolean tiny = o.bool("tiny"), quiet = o.bool("quiet");
        String device = o.require("device");
        Stage.device(o); // before anything is written: a device that cannot be used is a usage error (exit 2)
        List<Long> seeds = seeds(o);
        int minNew = o.integer("min-new-tokens");
        if (minNew < 0) throw PipelineException.usage("demo: --min-new-tokens must be >= 0, got " + minNew);
        Path dir = o.has("out") ? o.path("out")
                : Path.of("aligndistil-demo-" + LocalDateTime.now().format(DateTimeFormatter.ofPattern("yyyyMMdd-HHmmss")));
        Files.createDirectories(dir);
        List<Run> runs = runs(tiny);
        String load0 = loadAverage();
        out.println("aligndistil demo: the AlignDistil pipeline on the built-in task, seeds " + seeds + (tiny ? " (tiny sizes)" : "") + ", "
                + runs.size() + " runs per seed -> " + dir);
        int jobs = o.integer("jobs");
        if (jobs < 1) throw PipelineException.usage("demo: --jobs must be at least 1, got " + jobs);
        Map<Long, Path> seedDirs = new LinkedHashMap<>();
        Map<String, Object> timings = new LinkedHashMap<>();
        for (long seed : seeds) seedDirs.put(seed, dir.resolve("seed-" + seed));
        // Seeds are independent (own folders, own random streams): run up to --jobs of them at once.
        java.util.concurrent.ExecutorService pool = java.util.concurrent.Executors.newFixedThreadPool(Math.min(jobs, seeds.size()));
        try {
            List<java.util.concurrent.Future<Map<String, Object>>> fs = new ArrayList<>();
            for (int i = 0; i < seeds.size(); i++) {
                long seed = seeds.get(i);
                int k = i + 1;
                fs.add(pool.submit(() -> runSeed(seedDirs.get(seed), seed, k, seeds.size(), runs, tiny, quiet, minNew, device, out, err)));
            }
            for (int i = 0; i < seeds.size(); i++) {
                try {
                    timings.put("seed-" + seeds.get(i), fs.get(i).get());
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    throw new IOException("demo: interrupted", e);
                } catch (java.util.concurrent.ExecutionException e) {
                    if (e.getCause() instanceof IOException io) throw io;
                    if (e.getCause() instanceof RuntimeException re) throw re;
                    throw new IOException("demo: seed " + seeds.get(i) + ": " + e.getCause(), e.getCause());
                }
            }
        } finally {
            pool.shutdownNow();
        }
        timings.put("jobs", Math.min(jobs, seeds.size()));
        long tr = System.nanoTime();
        out.printf("report: aggregating %d seed(s), scoring the claims, drawing the frontier chart%n", seeds.size());
        FrontierReport rep = new FrontierReport(dir, seedDirs, runs.stream().map(Run::info).toList(), tiny);
        double total = (System.nanoTime() - t0) / 1e9;
        timings.put("report_s", (System.nanoTime() - tr) / 1e9);
        timings.put("total_s", total);
        timings.put("cpu_s", processCpuSeconds());
        timings.put("cores", Runtime.getRuntime().availableProcessors());
        timings.put("load_average_start", load0);
        timings.put("load_average_end", loadAverage());
        rep.write(timings);
        out.println();
        for (String c : rep.claimLines()) out.println("- " + c);
        out.printf("%ndemo finished in %.1f s; report, chart and results in%n%s%n", total, dir.toAbsolutePath().resolve("report.md"));
        return 0;
    }

    /** One seed: task, sft, pairs, DPO sweep, reverse DPO, distillation runs, evaluation. Returns the seconds per stage. */
    static Map<String, Object> runSeed(Path dir, long seed, int k, int n, List<Run> runs, boolean tiny, boolean quiet, int minNew, String device,
                                       PrintStream out, PrintStream err) throws IOException {
        long ts = System.nanoTime();
        Files.createDirectories(dir);
        Path taskDir = dir.resolve("task"), models = dir.resolve("models");
        String tag = String.format("[seed %d, %d/%d]", seed, k, n);
        Map<String, Object> seconds = new LinkedHashMap<>();
        long t = System.nanoTime();
        TaskFiles.generate(taskDir, seed, tiny ? TaskFiles.Sizes.tiny() : TaskFiles.Sizes.demo());
        String cfg = taskDir.resolve("pipeline.json").toString();
        List<String> common = new ArrayList<>(List.of("--config", cfg, "--seed", Long.toString(seed), "--min-new-tokens", Integer.toString(minNew),
                "--device", device));
        if (tiny) common.addAll(List.of("--batch", "16", "--micro-batch", "8", "--curve-prompts", "8", "--epochs", "1", "--generate-max-len", "8"));
        if (quiet) common.add("--quiet");
        Path init = models.resolve("init");
        SftStage.run(SftStage.spec().parse(args(common, "--model", taskDir.resolve("base").toString(), "--out", init.toString())), err);
        seconds.put("task+sft", done(out, tag, "task and initial policy (sft)", t));
        t = System.nanoTime();
        TaskFiles.makePairs(taskDir, init, seed, 64, err);
        seconds.put("pairs", done(out, tag, "preference pairs", t));
        List<String> trainCommon = new ArrayList<>(common);
        if (tiny) trainCommon.addAll(List.of("--eval-every", "2"));
        Path dpo = models.resolve("dpo"), rev = models.resolve("dpo-rev");
        t = System.nanoTime();
        DpoStage.run(DpoStage.spec().parse(args(trainCommon, "--model", init.toString(), "--out", rev.toString(), "--reverse", "--eval-every", "0")), err);
        seconds.put("dpo-rev", done(out, tag, "reverse DPO", t));
        for (Run r : runs) {
            t = System.nanoTime();
            List<String> a = new ArrayList<>(trainCommon);
            if (r.stage().equals("dpo")) {
                a.addAll(List.of("--model", init.toString(), "--out", models.resolve(r.name()).toString(), "--beta", Double.toString(r.beta())));
                DpoStage.run(DpoStage.spec().parse(a.toArray(String[]::new)), err);
            } else {
                a.addAll(List.of("--model", init.toString(), "--dpo", dpo.toString(), "--reverse-dpo", rev.toString(), "--mode", r.mode(),
                        "--variant", r.variant(), "--positions", r.positions(), "--out", models.resolve(r.name()).toString()));
                if (r.beta2() != null) a.addAll(List.of("--beta2", Double.toString(r.beta2())));
                if (r.mode().equals("on-policy")) a.addAll(List.of("--data", taskDir.resolve("train_prefs.jsonl").toString()));
                DistillStage.run(DistillStage.spec().parse(a.toArray(String[]::new)), err);
            }
            seconds.put(r.name(), done(out, tag, r.name(), t));
        }
        t = System.nanoTime();
        StringBuilder list = new StringBuilder("init=" + init + ",dpo-rev=" + rev);
        for (Run r : runs) list.append(',').append(r.name()).append('=').append(models.resolve(r.name()));
        List<String> ea = new ArrayList<>(List.of("--config", cfg, "--models", list.toString(), "--init", init.toString(), "--dpo", dpo.toString(),
                "--reverse-dpo", rev.toString(), "--ref", init.toString(), "--task", taskDir.toString(), "--seed", Long.toString(seed + 1000),
                "--min-new-tokens", Integer.toString(minNew), "--samples", tiny ? "1" : "2", "--out", dir.resolve("eval.json").toString(),
                "--device", device));
        if (tiny) ea.addAll(List.of("--generate-max-len", "8"));
        EvalStage.run(EvalStage.spec().parse(ea.toArray(String[]::new)), err);
        seconds.put("eval", done(out, tag, "evaluation of every model", t));
        // The per-seed training curves by step (the frontier chart of all seeds is drawn by FrontierReport).
        List<String> curveRuns = new ArrayList<>();
        for (Run r : runs) if (!r.name().equals("dpo")) curveRuns.add(r.name());
        new DemoReport(dir, models, Map.of(), curveRuns).charts();
        double total = (System.nanoTime() - ts) / 1e9;
        seconds.put("seed_total", total);
        out.printf("%s seed done in %.1f s%n", tag, total);
        HfCheckpoint.writeAtomically(dir.resolve("timings.json"), Json.write(JsonLines.sanitize(seconds)) + "\n");
        return seconds;
    }

    static double done(PrintStream out, String tag, String what, long t) {
        double s = (System.nanoTime() - t) / 1e9;
        out.printf("%s %-32s %6.1f s%n", tag, what, s);
        out.flush();
        return s;
    }

    /** CPU time of this process so far (all threads, user + system), seconds; NaN where the JVM cannot tell. */
    static double processCpuSeconds() {
        if (java.lang.management.ManagementFactory.getOperatingSystemMXBean() instanceof com.sun.management.OperatingSystemMXBean os) {
            long ns = os.getProcessCpuTime();
            return ns < 0 ? Double.NaN : ns / 1e9;
        }
        return Double.NaN;
    }

    /** The 1/5/15-minute load averages (/proc/loadavg), or "unknown". */
    static String loadAverage() {
        try {
            String[] p = Files.readString(Path.of("/proc/loadavg")).trim().split("\\s+");
            return p[0] + " " + p[1] + " " + p[2];
        } catch (IOException | RuntimeException e) {
            return "unknown";
        }
    }

    static String[] args(List<String> common, String... more) {
        List<String> a = new ArrayList<>(common);
        a.addAll(List.of(more));
        return a.toArray(String[]::new);
    }
}
