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
import ai.aligndistil.pipeline.stages.Stage;
import ai.aligndistil.pipeline.stages.TaskFiles;
import ai.aligndistil.pipeline.config.Options;
import ai.aligndistil.pipeline.data.JsonLines;
import ai.aligndistil.pipeline.stages.SftStage;
import ai.aligndistil.pipeline.stages.DpoStage;
import ai.aligndistil.pipeline.stages.DistillStage;
import ai.aligndistil.pipeline.stages.EvalStage;
import ai.aligndistil.pipeline.report.Report;
import ai.aligndistil.pipeline.report.DemoReport;

/**
 * {@code demo}: the whole method on the built-in task. Generates the task from the seed, trains the
 * initial policy ({@code sft}), samples and labels the preference pairs, trains DPO and reverse DPO, then
 * on-policy GKD, off- and on-policy AlignDistil and the constant-weight ablation ({@code contrast} with beta2
 * 0.1 and 0.05, weights 1 and 2), evaluates everything, prints one table and writes a Markdown report with
 * charts, checking the paper's claims against the numbers. Deterministic for a seed.
 */
public final class Demo {
    private Demo() {}

    public static Options.Spec spec() {
        return new Options.Spec("demo")
                .value("out", null, "output folder (default: aligndistil-demo-DATE-TIME in the current folder)")
                .value("seed", 1, "seed of the task and of every stage; the demo is a function of it")
                .flag("tiny", false, "very small sizes (a smoke run in seconds; numbers not meaningful)")
                .flag("quiet", false, "no progress bars on stderr")
                .value("device", "auto", "where every stage's models run: auto (CUDA when it answers, else the CPU; logged), cpu, cuda or cuda:N");
    }

    /** One distillation run of the demo. */
    record Run(String name, String mode, String variant, Double beta2) {}

    static final List<Run> RUNS = List.of(
            new Run("gkd-on", "on-policy", "gkd", null),
            new Run("aligndistil-off", "off-policy", "aligndistil", null),
            new Run("aligndistil-on", "on-policy", "aligndistil", null),
            new Run("contrast-w1-off", "off-policy", "contrast", 0.1),
            new Run("contrast-w2-off", "off-policy", "contrast", 0.05),
            // Sensitivity check (not a default of the official scripts): beta2 = 1 puts the adaptive weight in
            // [0.001, 2.001], the range of the constant weights 1 and 2 above.
            new Run("aligndistil-off-b1", "off-policy", "aligndistil", 1.0),
            new Run("aligndistil-on-b1", "on-policy", "aligndistil", 1.0));

    public static int run(Options o, PrintStream out, PrintStream err) throws IOException {
        long t0 = System.nanoTime();
        long seed = o.longValue("seed");
        boolean tiny = o.bool("tiny"), quiet = o.bool("quiet");
        Stage.device(o); // before anything is written: a device that cannot be used is a usage error (exit 2)
        Path dir = o.has("out") ? o.path("out")
                : Path.of("aligndistil-demo-" + LocalDateTime.now().format(DateTimeFormatter.ofPattern("yyyyMMdd-HHmmss")));
        Files.createDirectories(dir);
        Path taskDir = dir.resolve("task"), models = dir.resolve("models");
        out.println("aligndistil demo: the AlignDistil pipeline on the built-in task (seed " + seed + (tiny ? ", tiny sizes" : "") + ") -> " + dir);
        TaskFiles.generate(taskDir, seed, tiny ? TaskFiles.Sizes.tiny() : TaskFiles.Sizes.demo());
        String cfg = taskDir.resolve("pipeline.json").toString();
        List<String> common = new ArrayList<>(List.of("--config", cfg, "--seed", Long.toString(seed), "--device", o.require("device")));
        if (tiny) common.addAll(List.of("--batch", "16", "--micro-batch", "8", "--curve-prompts", "8", "--epochs", "1", "--generate-max-len", "8"));
        if (quiet) common.add("--quiet");
        Map<String, Double> seconds = new LinkedHashMap<>();

        long t = System.nanoTime();
        Path init = models.resolve("init");
        SftStage.run(SftStage.spec().parse(args(common, "--model", taskDir.resolve("base").toString(), "--out", init.toString())), err);
        seconds.put("sft", secs(t));
        t = System.nanoTime();
        TaskFiles.makePairs(taskDir, init, seed, 64, err);
        seconds.put("pairs", secs(t));
        List<String> trainCommon = new ArrayList<>(common);
        if (tiny) trainCommon.addAll(List.of("--eval-every", "2"));
        Path dpo = models.resolve("dpo"), rev = models.resolve("dpo-rev");
        t = System.nanoTime();
        DpoStage.run(DpoStage.spec().parse(args(trainCommon, "--model", init.toString(), "--out", dpo.toString())), err);
        seconds.put("dpo", secs(t));
        t = System.nanoTime();
        DpoStage.run(DpoStage.spec().parse(args(trainCommon, "--model", init.toString(), "--out", rev.toString(), "--reverse", "--eval-every", "0")), err);
        seconds.put("dpo-rev", secs(t));
        for (Run r : RUNS) {
            t = System.nanoTime();
            List<String> a = new ArrayList<>(trainCommon);
            a.addAll(List.of("--model", init.toString(), "--dpo", dpo.toString(), "--reverse-dpo", rev.toString(),
                    "--mode", r.mode(), "--variant", r.variant(), "--out", models.resolve(r.name()).toString()));
            if (r.beta2() != null) a.addAll(List.of("--beta2", Double.toString(r.beta2())));
            if (r.mode().equals("on-policy")) a.addAll(List.of("--data", taskDir.resolve("train_prefs.jsonl").toString()));
            DistillStage.run(DistillStage.spec().parse(a.toArray(String[]::new)), err);
            seconds.put(r.name(), secs(t));
        }

        t = System.nanoTime();
        StringBuilder list = new StringBuilder("init=" + init + ",dpo=" + dpo + ",dpo-rev=" + rev);
        for (Run r : RUNS) list.append(',').append(r.name()).append('=').append(models.resolve(r.name()));
        List<String> ea = new ArrayList<>(List.of("--config", cfg, "--models", list.toString(), "--init", init.toString(), "--dpo", dpo.toString(),
                "--reverse-dpo", rev.toString(), "--ref", init.toString(), "--task", taskDir.toString(), "--seed", Long.toString(seed + 1000),
                "--out", dir.resolve("results.json").toString(), "--device", o.require("device")));
        if (tiny) ea.addAll(List.of("--samples", "1", "--generate-max-len", "8"));
        Map<String, Object> result = EvalStage.run(EvalStage.spec().parse(ea.toArray(String[]::new)), err);
        seconds.put("eval", secs(t));
        double total = secs(t0);
        String table = Report.evalTable(result);
        out.println();
        out.print(table);
        DemoReport rep = new DemoReport(dir, models, result, RUNS.stream().map(Run::name).toList());
        List<String> claims = rep.claims();
        out.println();
        for (String c : claims) out.println("- " + c);
        rep.charts();
        rep.write(table, claims, seconds, total, seed, tiny);
        HfCheckpoint.writeAtomically(dir.resolve("timings.json"), Json.write(JsonLines.sanitize(new LinkedHashMap<String, Object>(seconds))) + "\n");
        out.printf("%ndemo finished in %.1f s; report, charts and metrics in%n%s%n", total, dir.toAbsolutePath().resolve("report.md"));
        return 0;
    }

    static String[] args(List<String> common, String... more) {
        List<String> a = new ArrayList<>(common);
        a.addAll(List.of(more));
        return a.toArray(String[]::new);
    }

    static double secs(long t) { return (System.nanoTime() - t) / 1e9; }
}
