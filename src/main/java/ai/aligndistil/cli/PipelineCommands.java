package ai.aligndistil.cli;

import java.io.IOException;
import java.io.PrintStream;
import java.io.UncheckedIOException;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;

import picocli.CommandLine;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Model.OptionSpec;
import picocli.CommandLine.ParseResult;

import ai.aligndistil.pipeline.config.Options;
import ai.aligndistil.pipeline.config.PipelineException;
import ai.aligndistil.pipeline.config.StageCommandLine;
import ai.aligndistil.pipeline.data.DataFiles;
import ai.aligndistil.pipeline.demo.Demo;
import ai.aligndistil.pipeline.profiling.ProfileWindow;
import ai.aligndistil.pipeline.report.Report;
import ai.aligndistil.pipeline.stages.DistillStage;
import ai.aligndistil.pipeline.stages.DpoStage;
import ai.aligndistil.pipeline.stages.EvalStage;
import ai.aligndistil.pipeline.stages.SftStage;
import ai.aligndistil.pipeline.stages.Stage;
import ai.aligndistil.pipeline.stages.TaskFiles;
import ai.aligndistil.train.dist.DistEnv;
import ai.aligndistil.train.dist.DistException;
import ai.aligndistil.train.dist.DistGroup;

/**
 * The pipeline's commands (task, task-pairs, sft, dpo, distill, eval, demo), each a picocli command built from the
 * stage's {@link Options.Spec} by {@link StageCommandLine}: the declaration is the one place an option is named,
 * described and defaulted.
 */
final class PipelineCommands {
    private PipelineCommands() {}

    /** The stages, in the order the help lists them (demo is added separately, first). */
    static final List<String> STAGES = List.of("task", "task-pairs", "sft", "dpo", "distill", "eval");

    static Options.Spec spec(String stage) {
        return switch (stage) {
            case "task" -> TaskFiles.spec();
            case "task-pairs" -> TaskFiles.pairsSpec();
            case "sft" -> SftStage.spec();
            case "dpo" -> DpoStage.spec();
            case "distill" -> DistillStage.spec();
            case "eval" -> EvalStage.spec();
            case "demo" -> Demo.spec();
            default -> throw new IllegalArgumentException("no stage " + stage);
        };
    }

    static String description(String stage) {
        return switch (stage) {
            case "task" -> "Generate the built-in task: a toy language with a known reward, its tokenizer, a base model, SFT data, "
                    + "pair prompts and pipeline.json (docs/pipeline.md).";
            case "task-pairs" -> "Sample two responses per pair prompt from the initial policy and label them by the task's true reward "
                    + "(Bradley-Terry): train_prefs.jsonl and test_prefs.jsonl in the task folder.";
            case "sft" -> "Supervised fine-tuning (cross-entropy on the response tokens); prints the output folder.";
            case "dpo" -> "DPO against a frozen reference, or with --reverse reverse DPO (chosen and rejected swapped); prints the output folder.";
            case "distill" -> "AlignDistil off- or on-policy, and its variants (contrast, adaptive, theorem1, gkd), through the fused loss "
                    + "kernel; prints the output folder.";
            case "eval" -> "True reward, win rate against the initial policy, KLs, length and reward accuracy of trained models; a table on stdout.";
            case "demo" -> "The main job: the whole AlignDistil pipeline on the built-in task (task, sft, pairs, DPO, reverse DPO, "
                    + "distillation runs, eval) with a Markdown report and charts; demo --replay: the kernel checked on a built-in batch.";
            default -> "";
        };
    }

    /** A stage's command. */
    static CommandLine stage(String name, Main root) {
        Options.Spec spec = spec(name);
        CommandSpec[] self = new CommandSpec[1];
        Callable<Integer> body = () -> run(name, StageCommandLine.options(spec, self[0], root.quiet()), rawArgs(self[0], name), root.out(), root.err());
        CommandSpec cs = StageCommandLine.commandSpec(spec, body, false);
        self[0] = cs;
        cs.usageMessage().description(description(name)).sortOptions(false).abbreviateSynopsis(true);
        return new CommandLine(cs);
    }

    /** {@code demo}, with {@code --replay} (the first demo: the kernel checked on a built-in batch). */
    static CommandLine demo(Main root) {
        Options.Spec spec = spec("demo");
        CommandSpec[] self = new CommandSpec[1];
        Callable<Integer> body = () -> {
            ParseResult pr = self[0].commandLine().getParseResult();
            OptionSpec replay = self[0].findOption("--replay");
            if (pr.hasMatchedOption(replay)) {
                for (OptionSpec o : pr.matchedOptions())
                    if (o != replay && !o.inherited())
                        throw PipelineException.usage("demo: --replay takes no other options (got " + o.longestName() + ")");
                return ai.aligndistil.kernel.tool.KernelMain.runCommand("aligndistil self-check", new ai.aligndistil.kernel.tool.SelfCheckCommand(), new String[0], root.out(), root.err());
            }
            return run("demo", StageCommandLine.options(spec, self[0], root.quiet()), rawArgs(self[0], "demo"), root.out(), root.err());
        };
        CommandSpec cs = StageCommandLine.commandSpec(spec, body, false);
        cs.addOption(OptionSpec.builder("--replay").arity("0").type(boolean.class)
                .description("The old name of 'aligndistil self-check', kept as an alias: instead of the pipeline, replay a built-in example batch (2 x 48 positions, V = 32000) on the default "
                        + "backend and check loss and gradient against the double-precision reference; trains nothing.").build());
        self[0] = cs;
        cs.usageMessage().description(description("demo")).sortOptions(false).abbreviateSynopsis(true);
        return new CommandLine(cs);
    }

    /** The command's own arguments as typed (after its name), for the workers that {@code --nproc-per-node} starts. */
    static String[] rawArgs(CommandSpec cs, String name) {
        List<String> all = cs.commandLine().getParseResult().originalArgs();
        int i = all.indexOf(name);
        return all.subList(i + 1, all.size()).toArray(String[]::new);
    }

    /**
     * Runs a parsed stage; failures become {@link PipelineException}s or {@link CliException}s (Main maps them to exit
     * codes). {@code raw} are the stage's arguments as typed, which {@code --nproc-per-node} hands to its workers.
     */
    static int run(String cmd, Options o, String[] raw, PrintStream out, PrintStream err) {
        try {
            switch (cmd) {
                case "task" -> {
                    TaskFiles.Sizes d = new TaskFiles.Sizes(o.integer("words"), o.integer("sft-size"), o.integer("train-pairs"),
                            o.integer("test-pairs"), o.integer("eval-prompts"), o.integer("hidden"), o.integer("layers"));
                    out.println(TaskFiles.generate(o.path("out"), o.longValue("seed"), d));
                }
                case "task-pairs" -> TaskFiles.makePairs(o.path("task"), o.path("policy"), o.longValue("seed"), o.integer("gen-batch"), err);
                case "sft" -> {
                    return train(cmd, o, raw, out, err, (x, g) -> SftStage.run(x, err, g).toString(), System.getenv());
                }
                case "dpo" -> {
                    return train(cmd, o, raw, out, err, (x, g) -> DpoStage.run(x, err, g).toString(), System.getenv());
                }
                case "distill" -> {
                    return train(cmd, o, raw, out, err, (x, g) -> DistillStage.run(x, err, g).toString(), System.getenv());
                }
                case "eval" -> {
                    return train(cmd, o, raw, out, err, (x, g) -> Report.evalTable(EvalStage.run(x, err, g)), System.getenv());
                }
                case "demo" -> {
                    return Demo.run(o, out, err);
                }
                default -> throw new IllegalArgumentException("unknown command " + cmd);
            }
            return 0;
        } catch (DistException e) {
            throw new CliException(e.usage() ? CliException.USAGE : CliException.FAILURE, cmd + ": " + e.getMessage());
        } catch (IOException e) {
            throw PipelineException.failure(cmd + ": " + e.getMessage());
        } catch (UncheckedIOException e) {
            throw PipelineException.failure(cmd + ": " + e.getCause().getMessage());
        } catch (DataFiles.DataException e) {
            throw PipelineException.failure(cmd + ": " + e.getMessage() + " (nothing was trained; --skip-bad-lines skips such lines and counts them)");
        } catch (IllegalArgumentException e) {
            throw PipelineException.failure(cmd + ": " + e.getMessage());
        }
    }

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
        return train(cmd, spec.parse(args), args, out, err, run, environment);
    }

    /** {@link #train} on options already parsed; {@code args} are the ones the workers of --nproc-per-node get. */
    static int train(String cmd, Options o, String[] args, PrintStream out, PrintStream err, RankRun run, Map<String, String> environment)
            throws IOException {
        if (o.keys().contains("profile-step")) checked(o);
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
        try {
            ProfileWindow.of(o);
        } catch (IllegalArgumentException e) {
            throw PipelineException.usage(o.stage() + ": " + e.getMessage());
        }
        return o;
    }
}
