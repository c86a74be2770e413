package ai.aligndistil.cli;

import ai.aligndistil.kernel.Backend;
import ai.aligndistil.kernel.Backends;
import ai.aligndistil.kernel.NativeCpu;
import ai.aligndistil.kernel.NativeCuda;

import java.io.PrintStream;
import java.util.Arrays;
import java.util.logging.Level;
import java.util.logging.Logger;

/**
 * The {@code aligndistil} command line. Every failure is one line on stderr and a non-zero exit
 * (2: usage, 1: anything else); {@code -Daligndistil.debug=true} adds the stack trace.
 */
public final class Main {
    private Main() {}

    static final String USAGE = """
            usage: aligndistil COMMAND [options]
              demo       the main job: the whole AlignDistil pipeline on the built-in task, with a report (demo --help)
                         (demo --replay: replay a built-in example batch and check the kernel against the reference)
              replay     loss and gradient of a batch dumped to safetensors (replay --help)
              logits     one forward pass of a Hugging Face model folder, logits to safetensors (logits --help)
              task       generate the built-in task (a toy language with a known reward)
              task-pairs sample and label the built-in task's preference pairs from the initial policy
              sft        supervised fine-tuning                       (sft --help)
              dpo        DPO; with --reverse, reverse DPO              (dpo --help)
              distill    off-/on-policy AlignDistil and its variants   (distill --help)
              eval       true reward, win rate, KLs, length, reward accuracy (eval --help)
              diagnose   what this machine offers: backends, native libraries, CPU code path, GPUs
              test       the whole test suite through Maven (handled by the ./aligndistil launcher)
              version
            options before COMMAND: -v / --verbose (log INFO lines, such as the backend choice)""";

    public static void main(String[] args) {
        System.exit(run(args, System.out, System.err));
    }

    /** Runs a command and returns its exit code (never calls System.exit: usable from tests). */
    public static int run(String[] args, PrintStream out, PrintStream err) {
        int i = 0;
        boolean verbose = false;
        while (i < args.length && (args[i].equals("-v") || args[i].equals("--verbose"))) {
            verbose = true;
            i++;
        }
        configureLogging(verbose);
        if (i >= args.length) {
            err.println(USAGE);
            return CliException.USAGE;
        }
        String cmd = args[i];
        String[] rest = Arrays.copyOfRange(args, i + 1, args.length);
        try {
            return switch (cmd) {
                case "replay" -> ReplayCommand.run(rest, out);
                case "demo" -> rest.length > 0 && rest[0].equals("--replay")
                        ? DemoCommand.run(Arrays.copyOfRange(rest, 1, rest.length), out)
                        : ai.aligndistil.cli.PipelineCommands.run("demo", rest, out, err);
                case "logits" -> ai.aligndistil.cli.LogitsCommand.run(rest, out, err);
                case "task", "task-pairs", "sft", "dpo", "distill", "eval" ->
                        ai.aligndistil.cli.PipelineCommands.run(cmd, rest, out, err);
                case "diagnose" -> diagnose(out);
                case "version", "--version" -> {
                    out.println("aligndistil " + version());
                    yield 0;
                }
                case "help", "--help", "-h" -> {
                    out.println(USAGE);
                    yield 0;
                }
                default -> throw CliException.usage("unknown command '" + cmd + "'\n" + USAGE);
            };
        } catch (CliException e) {
            err.println("aligndistil " + e.getMessage());
            if (Boolean.getBoolean("aligndistil.debug")) e.printStackTrace(err);
            return e.exitCode();
        } catch (ai.aligndistil.pipeline.config.PipelineException e) {
            err.println("aligndistil " + e.getMessage());
            if (Boolean.getBoolean("aligndistil.debug")) e.printStackTrace(err);
            return e.exitCode();
        } catch (RuntimeException | OutOfMemoryError e) {
            err.println("aligndistil " + cmd + ": " + e.getClass().getSimpleName() + ": " + e.getMessage());
            if (Boolean.getBoolean("aligndistil.debug")) e.printStackTrace(err);
            return CliException.FAILURE;
        }
    }

    static String version() {
        String v = Main.class.getPackage().getImplementationVersion();
        return v == null ? "(development build)" : v;
    }

    private static void configureLogging(boolean verbose) {
        if (System.getProperty("java.util.logging.SimpleFormatter.format") == null)
            System.setProperty("java.util.logging.SimpleFormatter.format", "%4$s: %5$s%6$s%n");
        Logger root = Logger.getLogger("");
        Level level = verbose ? Level.INFO : Level.WARNING;
        root.setLevel(level);
        for (var h : root.getHandlers()) h.setLevel(level);
    }

    private static int diagnose(PrintStream out) {
        out.println("aligndistil " + version());
        out.println("java        " + System.getProperty("java.vm.name") + " " + System.getProperty("java.runtime.version"));
        out.println("platform    " + ai.aligndistil.kernel.NativeLibraries.platform() + ", " + Runtime.getRuntime().availableProcessors() + " CPUs");
        for (Backend b : Backend.values()) out.println(String.format("%-11s %s", b.id(), Backends.describe(b)));
        if (NativeCuda.libraryLoaded() && NativeCuda.deviceCount() > 0) {
            for (int d = 0; d < NativeCuda.deviceCount(); d++) {
                long[] info = NativeCuda.deviceInfo(d);
                out.printf("gpu %d       %s, sm_%d%d, %d SMs, %.1f GiB, L2 %d MiB, driver %d, runtime %d%n", d, NativeCuda.deviceName(d),
                        info[0], info[1], info[2], info[3] / (double) (1L << 30), info[4] >> 20, info[5], info[6]);
            }
        }
        out.println("nvtx        " + ai.aligndistil.kernel.Nvtx.status() + " [-D" + ai.aligndistil.kernel.Nvtx.PROPERTY + "=auto|true|false]");
        out.println("host default backend: " + Backends.hostDefault()
                + (NativeCpu.available() ? "" : " (native CPU library unavailable: " + NativeCpu.problem() + ")"));
        return 0;
    }
}
