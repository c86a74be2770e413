package ai.aligndistil.cli;

import java.io.IOException;
import java.io.PrintStream;
import java.io.UncheckedIOException;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Map;

import ai.aligndistil.cli.CliException;
import ai.aligndistil.pipeline.stages.TaskFiles;
import ai.aligndistil.pipeline.config.Options;
import ai.aligndistil.pipeline.config.PipelineException;
import ai.aligndistil.pipeline.data.DataFiles;
import ai.aligndistil.pipeline.profiling.ProfileWindow;
import ai.aligndistil.pipeline.stages.SftStage;
import ai.aligndistil.pipeline.stages.DpoStage;
import ai.aligndistil.pipeline.stages.DistillStage;
import ai.aligndistil.pipeline.stages.EvalStage;
import ai.aligndistil.pipeline.stages.TrainLoop;
import ai.aligndistil.pipeline.report.Report;
import ai.aligndistil.pipeline.demo.Demo;
import ai.aligndistil.pipeline.stages.Stage;
import ai.aligndistil.train.dist.DistEnv;
import ai.aligndistil.train.dist.DistException;
import ai.aligndistil.train.dist.DistGroup;

/** The pipeline's commands: task, task-pairs, sft, dpo, distill, eval, demo. */
public final class PipelineCommands {
    private PipelineCommands() {}

    public static final String USAGE = """
              task        generate the built-in task (task --out DIR [--seed N])
              task-pairs  sample and label the built-in task's preference pairs (task-pairs --task DIR --policy SFT_DIR)
              sft         supervised fine-tuning (sft --model DIR --data FILE --out DIR [--config FILE] [...])
              dpo         DPO, or reverse DPO with --reverse (dpo --model DIR --data FILE --out DIR [...])
              distill     AlignDistil (distill --mode off-policy|on-policy --variant aligndistil|contrast|adaptive|theorem1|gkd
                          --model DIR --dpo DIR --reverse-dpo DIR --data FILE --out DIR [...])
              eval        true reward, win rate, KLs, length, reward accuracy (eval --models a=DIR,b=DIR --init DIR [...])
              demo        the whole method on the built-in task, with a report (demo --out DIR --seed N)""";

    public static boolean handles(String cmd) {
        return switch (cmd) {
            case "task", "task-pairs", "sft", "dpo", "distill", "eval", "demo", "demo-pipeline" -> true;
            default -> false;
        };
    }

    public static int run(String cmd, String[] args, PrintStream out, PrintStream err) {
        for (String a : args) {
            if (a.equals("--help") || a.equals("-h")) {
                out.println(help(cmd));
                return 0;
            }
        }
        try {
            switch (cmd) {
                case "task" -> {
                    Options o = TaskFiles.spec().parse(args);
                    TaskFiles.Sizes d = new TaskFiles.Sizes(o.integer("words"), o.integer("sft-size"), o.integer("train-pairs"),
                            o.integer("test-pairs"), o.integer("eval-prompts"), o.integer("hidden"), o.integer("layers"));
                    out.println(TaskFiles.generate(o.path("out"), o.longValue("seed"), d));
                }
                case "task-pairs" -> {
                    Options o = TaskFiles.pairsSpec().parse(args);
                    TaskFiles.makePairs(o.path("task"), o.path("policy"), o.longValue("seed"), o.integer("gen-batch"), err);
                }
                case "sft" -> {
                    return train(cmd, SftStage.spec(), args, out, err, (o, g) -> SftStage.run(o, err, g).toString());
                }
                case "dpo" -> {
                    return train(cmd, DpoStage.spec(), args, out, err, (o, g) -> DpoStage.run(o, err, g).toString());
                }
                case "distill" -> {
                    return train(cmd, DistillStage.spec(), args, out, err, (o, g) -> DistillStage.run(o, err, g).toString());
                }
                case "eval" -> {
                    return train(cmd, EvalStage.spec(), args, out, err, (o, g) -> Report.evalTable(EvalStage.run(o, err, g)));
                }
                case "demo", "demo-pipeline" -> {
                    return Demo.run(Demo.spec().parse(args), out, err);
                }
                default -> throw CliException.usage("unknown command " + cmd);
            }
            return 0;
        } catch (PipelineException e) {
            throw new CliException(e.usage() ? CliException.USAGE : CliException.FAILURE, e.getMessage());
        } catch (DistException e) {
            throw new CliException(e.usage() ? CliException.USAGE : CliException.FAILURE, cmd + ": " + e.getMessage());
        } catch (IOException e) {
            throw CliException.failure(cmd + ": " + e.getMessage());
        } catch (UncheckedIOException e) {
            throw CliException.failure(cmd + ": " + e.getCause().getMessage());
        } catch (DataFiles.DataException e) {
            throw CliException.failure(cmd + ": " + e.getMessage() + " (nothing was trained; --skip-bad-lines skips such lines and counts them)");
        } catch (IllegalArgumentException e) {
            throw CliException.failure(cmd + ": " + e.getMessage());
        }
    }

    static String help(String cmd) {
        Options.Spec s = switch (cmd) {
            case "task" -> TaskFiles.spec();
            case "task-pairs" -> TaskFiles.pairsSpec();
            case "sft" -> SftStage.spec();
            case "dpo" -> DpoStage.spec();
            case "distill" -> DistillStage.spec();
            case "eval" -> EvalStage.spec();
            default -> Demo.spec();
        };
        StringBuilder b = new StringBuilder("usage: aligndistil " + cmd + " [--config FILE] [options]\noptions (default):\n");
        Options d = s.defaults();
        for (String k : d.keys()) b.append(String.format("  --%-22s %s%n", k, d.str(k) == null ? "" : d.str(k)));
        return b.toString();
    }

    static Path p(String s) { return Path.of(s); }

    /** A stage as one rank of a group; returns what rank 0 prints on standard output. */
    interface RankRun {
        String run(Options o, DistGroup g) throws IOException;
    }

    /**
     * Runs a training stage: in one process; as the launcher of {@code --nproc-per-node N > 1} workers
     * ({@link Launcher}); or, when torchrun's variables are set, as one rank of that job (which rank 0 reports; the
     * others' results are theirs to print). A rank that fails leaves its error in the store for the others' messages.
     */
    static int train(String cmd, Options.Spec spec, String[] args, PrintStream out, PrintStream err, RankRun run) throws IOException {
        return train(cmd, spec, args, out, err, run, System.getenv());
    }

    /** {@link #train} with the environment given (tests run ranks as threads of one JVM). */
    static int train(String cmd, Options.Spec spec, String[] args, PrintStream out, PrintStream err, RankRun run, Map<String, String> environment)
            throws IOException {
        Options o = checked(spec.parse(args));
        int n = o.integer("nproc-per-node");
        long seconds = o.longValue("dist-timeout");
        if (seconds <= 0) throw CliException.usage(cmd + ": --dist-timeout must be a positive number of seconds, got " + seconds);
        Duration timeout = Duration.ofSeconds(seconds);
        DistEnv env = DistEnv.fromEnvironment(environment);
        boolean batched = o.keys().contains("batch"); // the training stages; eval splits its prompts and pairs, whatever their number
        if (env == null) {
            if (batched) Stage.requireDivisible(o.integer("batch"), n);
            if (n > 1) return Launcher.launch(cmd, args, n, timeout, batched && o.has("out") ? o.path("out") : null, environment, out, err);
            out.println(run.run(o, DistGroup.single()));
            return 0;
        }
        if (batched) Stage.requireDivisible(o.integer("batch"), env.worldSize());
        // The backend follows the training device when the stage has one (--device, "Training on a GPU"): NCCL for CUDA, Gloo for the CPU.
        DistGroup.Kind kind = o.keys().contains("device") ? DistGroup.Kind.forDevice(o.str("device")) : DistGroup.Kind.GLOO;
        DistGroup g = DistGroup.join(env, timeout, kind);
        // One GPU per local rank: a bare --device cuda means this rank's cuda:LOCAL_RANK.
        if (kind == DistGroup.Kind.NCCL && o.str("device").trim().equals("cuda")) o = o.with("device", g.device());
        String result;
        try {
            result = run.run(o, g);
        } catch (IOException | RuntimeException | Error e) {
            g.reportFailure(e);
            throw e;
        }
        g.close();
        if (g.isMain()) out.println(result);
        return 0;
    }

    /** Rejects a bad --profile-step / --profile-steps before any model is loaded (TrainLoop reads them again). */
    private static Options checked(Options o) {
        ProfileWindow.of(o);
        return o;
    }
}
