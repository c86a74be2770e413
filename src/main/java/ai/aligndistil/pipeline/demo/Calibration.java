package ai.aligndistil.pipeline.demo;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import ai.aligndistil.io.Json;
import ai.aligndistil.pipeline.config.Options;
import ai.aligndistil.pipeline.data.JsonLines;
import ai.aligndistil.pipeline.stages.DistillStage;
import ai.aligndistil.pipeline.stages.DpoStage;
import ai.aligndistil.pipeline.stages.SftStage;
import ai.aligndistil.pipeline.stages.TaskFiles;

/**
 * The task's calibration by the regime rule (docs/pipeline.md, "Calibration"): for each task seed and each
 * candidate learning rate, trains DPO and reverse DPO as the demo does (one epoch, beta 0.1) and measures, over the
 * off-policy training rows, the mean weight alpha at the official beta2 10 and the per-token KL(pi_dpo || pi_init)
 * ({@code regime.json} of a one-step AlignDistil run, which measures the teachers only). It looks at nothing else:
 * no policy is distilled to the end and no claim is scored. One JSON line per (seed, lr) on stdout.
 *
 * <pre>java -cp 'target/aligndistil.jar:target/lib/*' ai.aligndistil.pipeline.demo.Calibration OUT_DIR 1,2,3 5e-4,2e-4,1e-4,5e-5</pre>
 */
@picocli.CommandLine.Command(name = "Calibration", mixinStandardHelpOptions = true,
        description = "The task's calibration by the regime rule: mean alpha at beta2 10 and per-token KL(pi_dpo || pi_init) per (seed, lr); JSON lines on stdout.")
public final class Calibration implements java.util.concurrent.Callable<Integer> {
    @picocli.CommandLine.Parameters(index = "0", paramLabel = "OUT_DIR", description = "Folder for the tasks and models it trains.")
    Path out;
    @picocli.CommandLine.Parameters(index = "1", paramLabel = "SEEDS", split = ",", description = "Task seeds, comma-separated (e.g. 1,2,3).")
    List<Long> seeds;
    @picocli.CommandLine.Parameters(index = "2", paramLabel = "LRS", split = ",", description = "Candidate DPO learning rates, comma-separated (e.g. 5e-4,2e-4,1e-4,5e-5).")
    List<Double> lrs;

    public static void main(String[] a) {
        System.exit(new picocli.CommandLine(new Calibration()).execute(a));
    }

    @Override
    public Integer call() throws IOException {
        run(out, seeds, lrs, System.out, System.err);
        return 0;
    }

    public static List<Map<String, Object>> run(Path out, List<Long> seeds, List<Double> lrs, PrintStream res, PrintStream err) throws IOException {
        List<Map<String, Object>> rows = new ArrayList<>();
        for (long seed : seeds) {
            Path dir = out.resolve("seed-" + seed), taskDir = dir.resolve("task"), init = dir.resolve("init");
            TaskFiles.generate(taskDir, seed, TaskFiles.Sizes.demo());
            List<String> common = List.of("--config", taskDir.resolve("pipeline.json").toString(), "--seed", Long.toString(seed), "--quiet");
            SftStage.run(SftStage.spec().parse(Demo.args(common, "--model", taskDir.resolve("base").toString(), "--out", init.toString())), err);
            TaskFiles.makePairs(taskDir, init, seed, 64, err);
            for (double lr : lrs) {
                Path d = dir.resolve("lr-" + lr);
                List<String> c = new ArrayList<>(common);
                c.addAll(List.of("--lr", Double.toString(lr), "--eval-every", "0", "--model", init.toString()));
                DpoStage.run(DpoStage.spec().parse(Demo.args(c, "--out", d.resolve("dpo").toString())), err);
                DpoStage.run(DpoStage.spec().parse(Demo.args(c, "--out", d.resolve("dpo-rev").toString(), "--reverse")), err);
                Options o = DistillStage.spec().parse(Demo.args(c, "--out", d.resolve("probe").toString(), "--dpo", d.resolve("dpo").toString(),
                        "--reverse-dpo", d.resolve("dpo-rev").toString(), "--mode", "off-policy", "--variant", "aligndistil", "--beta2", "10",
                        "--max-steps", "1"));
                DistillStage.run(o, err);
                Map<String, Object> g = Json.parseObject(Files.readString(d.resolve("probe").resolve(DistillStage.REGIME_FILE)));
                Map<String, Object> row = new LinkedHashMap<>();
                row.put("seed", seed);
                row.put("lr", lr);
                for (String k : List.of("mean_alpha_official_beta2", "tvd_mean", "tvd_p10", "tvd_p90", "kl_dpo_init_per_token", "teacher_eos_first_row",
                        "dpo_eos_first_row", "in_regime"))
                    row.put(k, g.get(k));
                res.println(Json.write(JsonLines.sanitize(row)));
                res.flush();
                rows.add(row);
            }
        }
        return rows;
    }
}
