package ai.aligndistil.bench;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import ai.aligndistil.cli.Main;
import ai.aligndistil.io.Json;
import ai.aligndistil.pipeline.data.JsonLines;
import ai.aligndistil.pipeline.stages.TaskFiles;

/**
 * Data-parallel scaling on this machine (issue 14): DPO, off-policy and on-policy AlignDistil on the built-in task
 * (demo sizes) at 1 and 2 processes with the same global batch, through the command line ({@code --nproc-per-node}).
 * Per configuration: the median optimiser-step time and time in collectives over the steps after the first two (JIT
 * and allocator warm-up), the speedup T1/TN and the scaling efficiency T1/(N TN). Every process runs libtorch and the
 * kernel on one thread, so N processes use N cores. The teachers are the base model itself (the benchmark times the
 * step, not what it learns).
 * <pre>
 *   DataParallelBench --out PREFIX [--steps 14] [--batch 16] [--micro-batch 4] [--procs 1,2] [--meta k=v,...]
 * </pre>
 * Writes PREFIX.json and PREFIX.md.
 */
public final class DataParallelBench {
    private DataParallelBench() {}

    public static void main(String[] args) throws Exception {
        Map<String, String> a = new LinkedHashMap<>(Map.of("steps", "14", "batch", "16", "micro-batch", "4", "procs", "1,2", "meta", ""));
        for (int i = 0; i + 1 < args.length; i += 2) a.put(args[i].replaceFirst("^--", ""), args[i + 1]);
        if (!a.containsKey("out")) {
            System.err.println("usage: DataParallelBench --out PREFIX [--steps 14] [--batch 16] [--micro-batch 4] [--procs 1,2] [--meta k=v,...]");
            System.exit(2);
        }
        int steps = Integer.parseInt(a.get("steps"));
        Path work = Files.createTempDirectory("dp-bench");
        PrintStream quiet = new PrintStream(OutputStream.nullOutputStream());
        Path task = work.resolve("task");
        TaskFiles.generate(task, 1, TaskFiles.Sizes.demo());
        TaskFiles.makePairs(task, task.resolve("base"), 1, 64, quiet);
        String base = task.resolve("base").toString();
        List<Map<String, Object>> rows = new ArrayList<>();
        String[][] stages = {{"dpo"}, {"distill", "--mode", "off-policy"}, {"distill", "--mode", "on-policy"}};
        String[] names = {"dpo", "distill off-policy", "distill on-policy"};
        for (int s = 0; s < stages.length; s++) {
            double t1 = Double.NaN;
            for (String p : a.get("procs").split(",")) {
                int n = Integer.parseInt(p.trim());
                Path out = work.resolve("run-" + s + "-" + n);
                List<String> cmd = new ArrayList<>(List.of(stages[s][0], "--config", task.resolve("pipeline.json").toString(), "--model", base,
                        "--out", out.toString(), "--batch", a.get("batch"), "--micro-batch", a.get("micro-batch"), "--max-steps", Integer.toString(steps),
                        "--save-steps", "0", "--eval-every", "0", "--quiet", "--lr", "1e-3", "--nproc-per-node", Integer.toString(n)));
                if (stages[s][0].equals("distill")) cmd.addAll(List.of("--dpo", base, "--reverse-dpo", base));
                cmd.addAll(Arrays.asList(stages[s]).subList(1, stages[s].length));
                ByteArrayOutputStream err = new ByteArrayOutputStream();
                System.err.println("bench: " + names[s] + ", " + n + " process(es)");
                long t0 = System.nanoTime();
                int code = Main.run(cmd.toArray(String[]::new), quiet, new PrintStream(err, true, StandardCharsets.UTF_8));
                double wall = (System.nanoTime() - t0) / 1e9;
                if (code != 0) throw new IllegalStateException(names[s] + " at " + n + " processes failed (" + code + "):\n" + err);
                List<Map<String, Object>> m = JsonLines.read(out.resolve("metrics.jsonl"));
                double[] step = new double[m.size()], comm = new double[m.size()];
                double prev = 0;
                for (int i = 0; i < m.size(); i++) {
                    double e = ((Number) m.get(i).get("elapsed_s")).doubleValue();
                    step[i] = e - prev;
                    prev = e;
                    Object c = m.get(i).get("comm_s");
                    comm[i] = c instanceof Number x ? x.doubleValue() : 0;
                }
                double ts = median(Arrays.copyOfRange(step, 2, step.length)), tc = median(Arrays.copyOfRange(comm, 2, comm.length));
                if (n == 1) t1 = ts;
                Map<String, Object> r = new LinkedHashMap<>();
                r.put("stage", names[s]);
                r.put("processes", n);
                r.put("global_batch", Integer.parseInt(a.get("batch")));
                r.put("steps_timed", step.length - 2);
                r.put("step_s_median", ts);
                r.put("comm_s_median", tc);
                r.put("comm_share", tc / ts);
                r.put("speedup", t1 / ts);
                r.put("efficiency", t1 / (n * ts));
                r.put("command_wall_s", wall);
                rows.add(r);
                System.err.printf("bench: %s n=%d step %.4f s, collectives %.4f s, speedup %.2f, efficiency %.2f%n", names[s], n, ts, tc, t1 / ts, t1 / (n * ts));
            }
        }
        Map<String, Object> doc = new LinkedHashMap<>();
        doc.put("suite", "data-parallel");
        doc.put("task", "built-in task, demo sizes (" + TaskFiles.Sizes.demo() + ")");
        doc.put("threads_per_process", 1);
        doc.put("cpus", Runtime.getRuntime().availableProcessors());
        Map<String, Object> meta = new LinkedHashMap<>();
        for (String kv : a.get("meta").split(",")) {
            int eq = kv.indexOf('=');
            if (eq > 0) meta.put(kv.substring(0, eq), kv.substring(eq + 1));
        }
        doc.put("meta", meta);
        doc.put("results", rows);
        Path prefix = Path.of(a.get("out"));
        Files.writeString(Path.of(prefix + ".json"), Json.write(doc) + "\n");
        StringBuilder md = new StringBuilder("| stage | processes | step (median, s) | in collectives (s) | share | speedup | efficiency |\n|---|---:|---:|---:|---:|---:|---:|\n");
        for (Map<String, Object> r : rows)
            md.append(String.format("| %s | %d | %.4f | %.4f | %.0f %% | %.2f | %.2f |%n", r.get("stage"), r.get("processes"), r.get("step_s_median"),
                    r.get("comm_s_median"), 100 * (double) r.get("comm_share"), r.get("speedup"), r.get("efficiency")));
        Files.writeString(Path.of(prefix + ".md"), md.toString());
        System.err.println("bench: wrote " + prefix + ".{json,md}");
        try (var files = Files.walk(work)) {
            for (Path f : files.sorted(java.util.Comparator.reverseOrder()).toList()) Files.deleteIfExists(f);
        }
        System.out.print(md);
    }

    static double median(double[] v) {
        if (v.length == 0) return Double.NaN;
        double[] c = v.clone();
        Arrays.sort(c);
        return c.length % 2 == 1 ? c[c.length / 2] : (c[c.length / 2 - 1] + c[c.length / 2]) / 2;
    }
}
