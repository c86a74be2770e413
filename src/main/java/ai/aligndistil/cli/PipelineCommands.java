package ai.aligndistil.cli;

import java.io.IOException;
import java.io.PrintStream;
import java.io.UncheckedIOException;
import java.nio.file.Path;
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
                case "sft" -> out.println(SftStage.run(checked(SftStage.spec().parse(args)), err));
                case "dpo" -> out.println(DpoStage.run(checked(DpoStage.spec().parse(args)), err));
                case "distill" -> out.println(DistillStage.run(checked(DistillStage.spec().parse(args)), err));
                case "eval" -> {
                    Map<String, Object> r = EvalStage.run(EvalStage.spec().parse(args), err);
                    out.println(Report.evalTable(r));
                }
                case "demo", "demo-pipeline" -> {
                    return Demo.run(Demo.spec().parse(args), out, err);
                }
                default -> throw CliException.usage("unknown command " + cmd);
            }
            return 0;
        } catch (PipelineException e) {
            throw new CliException(e.exitCode(), e.getMessage());
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

    /** Rejects a bad --profile-step / --profile-steps before any model is loaded (TrainLoop reads them again). */
    private static Options checked(Options o) {
        ProfileWindow.of(o);
        return o;
    }
}
