package ai.aligndistil.cli;

import java.io.PrintStream;
import java.io.PrintWriter;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;

import picocli.AutoComplete;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.ScopeType;
import picocli.CommandLine.Spec;

import ai.aligndistil.kernel.Backend;
import ai.aligndistil.kernel.Backends;
import ai.aligndistil.kernel.NativeCpu;
import ai.aligndistil.kernel.NativeCuda;
import ai.aligndistil.kernel.tool.ReplayCommand;
import ai.aligndistil.kernel.tool.SelfCheckCommand;
import ai.aligndistil.pipeline.config.PipelineException;

/**
 * The {@code aligndistil} command line: one picocli root command with a subcommand per job. {@code COMMAND --help}
 * prints every option with its description and default on stdout (exit 0); a usage error (unknown or malformed
 * option, missing input, a device that cannot be used) prints at most two lines on stderr and exits 2; a failure
 * while running prints one line and exits 1 ({@code -Daligndistil.debug=true} adds the stack trace).
 * {@code -v/--verbose} and {@code -q/--quiet} work before or after the command.
 */
@Command(name = "aligndistil", mixinStandardHelpOptions = true, versionProvider = Main.Version.class, sortOptions = false,
        usageHelpAutoWidth = true,
        description = "AlignDistil: token-level distillation toward an extrapolated DPO teacher, with fused CPU and CUDA kernels.",
        footer = {"", "Run 'aligndistil COMMAND --help' for a command's options. './aligndistil test' runs the test suite (Maven).",
                "Exit codes: 0 success, 1 failure while running, 2 usage error."})
public final class Main implements Callable<Integer> {
    /** Exit code of a usage error. */
    public static final int USAGE = 2;
    /** Exit code of a failure while running. */
    public static final int FAILURE = 1;

    @Option(names = {"-v", "--verbose"}, scope = ScopeType.INHERIT,
            description = "Log INFO lines on stderr (the backend choice, library loading, timings); default: warnings and errors only.")
    boolean verbose;

    @Option(names = {"-q", "--quiet"}, negatable = true, scope = ScopeType.INHERIT,
            description = "Only errors on stderr, and no progress bars (the stages' --quiet).")
    Boolean quiet;

    @Spec CommandSpec spec;

    private final PrintStream out, err;

    private Main(PrintStream out, PrintStream err) {
        this.out = out;
        this.err = err;
    }

    public static void main(String[] args) {
        System.exit(run(args, System.out, System.err));
    }

    /** Runs a command and returns its exit code (never calls System.exit: usable from tests). */
    public static int run(String[] args, PrintStream out, PrintStream err) {
        Main root = new Main(out, err);
        CommandLine cl = commandLine(root);
        cl.setOut(new PrintWriter(out, true));
        cl.setErr(new PrintWriter(err, true));
        cl.setExpandAtFiles(false);
        cl.setOverwrittenOptionsAllowed(true);   // --no-x --x: the last one wins
        cl.setParameterExceptionHandler((e, a) -> {
            // picocli reports missing required options before unknown ones; the unknown option is the better hint
            CommandLine c = e.getCommandLine();
            String m = e instanceof CommandLine.MissingParameterException && !c.getUnmatchedArguments().isEmpty()
                    ? "Unknown option: '" + c.getUnmatchedArguments().get(0) + "'" : e.getMessage();
            return usageError(c, m, err);
        });
        cl.setExecutionExceptionHandler((e, c, pr) -> failure(e, c, err));
        cl.setExecutionStrategy(pr -> {
            Logging.configure(root.verbose, Boolean.TRUE.equals(root.quiet));
            return new CommandLine.RunLast().execute(pr);
        });
        return cl.execute(args);
    }

    /** The whole command tree (for the help and completion tests, and for {@code completion}). */
    static CommandLine commandLine(Main root) {
        CommandLine cl = new CommandLine(root);
        cl.addSubcommand("demo", PipelineCommands.demo(root));
        cl.addSubcommand("replay", new CommandLine(new ReplayCommand()));
        cl.addSubcommand("self-check", new CommandLine(new SelfCheckCommand()));
        cl.addSubcommand("logits", new CommandLine(new LogitsCommand(root.out, root.err)));
        for (String stage : PipelineCommands.STAGES) cl.addSubcommand(stage, PipelineCommands.stage(stage, root));
        cl.addSubcommand("diagnose", new CommandLine(new Diagnose(root)));
        cl.addSubcommand("version", new CommandLine(new VersionCommand(root)));
        cl.addSubcommand("completion", new CommandLine(new Completion(root)));
        cl.addSubcommand("help", new CommandLine.HelpCommand());
        return cl;
    }

    /** A root command writing to {@code out}/{@code err}, for tests of the command tree. */
    static Main forTest(PrintStream out, PrintStream err) { return new Main(out, err); }

    /** The inherited {@code -q/--quiet}: true or false where given, null where not. */
    Boolean quiet() { return quiet; }

    PrintStream out() { return out; }

    PrintStream err() { return err; }

    /** Without a command: the usage on stderr, exit 2. */
    @Override
    public Integer call() {
        spec.commandLine().usage(err);
        return USAGE;
    }

    /** At most two lines: the message (its first line) and where to look. */
    static int usageError(CommandLine c, String message, PrintStream err) {
        String name = c.getCommandSpec().qualifiedName(" ");
        err.println(name + ": " + firstLine(message));
        err.println("see '" + name + " --help'");
        return USAGE;
    }

    private static int failure(Exception e, CommandLine c, PrintStream err) {
        if (Boolean.getBoolean("aligndistil.debug")) e.printStackTrace(err);
        if (e instanceof CliException ce) {
            if (ce.exitCode() == CliException.USAGE) return usageError(c, stripCommand(c, ce.getMessage()), err);
            err.println("aligndistil " + firstLine(ce.getMessage()));
            return ce.exitCode();
        }
        if (e instanceof PipelineException pe) {
            if (pe.usage() && pe.helpHint()) return usageError(c, stripCommand(c, pe.getMessage()), err);
            if (pe.usage()) { // a refusal: complete in one line
                err.println("aligndistil " + firstLine(pe.getMessage()));
                return USAGE;
            }
            err.println("aligndistil " + firstLine(pe.getMessage()));
            return pe.exitCode(); // 1, or 128 + the signal for a stop on request
        }
        err.println(c.getCommandSpec().qualifiedName(" ") + ": " + e.getClass().getSimpleName() + ": " + firstLine(e.getMessage()));
        return FAILURE;
    }

    /** "sft: missing --model" under the command sft reads "missing --model" (the usage line names the command). */
    private static String stripCommand(CommandLine c, String message) {
        String prefix = c.getCommandName() + ": ";
        return message != null && message.startsWith(prefix) ? message.substring(prefix.length()) : message;
    }

    static String firstLine(String m) {
        if (m == null || m.isBlank()) return "(no message)";
        return m.strip().lines().findFirst().orElse(m).strip();
    }

    static String version() {
        String v = Main.class.getPackage().getImplementationVersion();
        return v == null ? "(development build)" : v;
    }

    /** {@code --version} of the root command. */
    static final class Version implements CommandLine.IVersionProvider {
        @Override
        public String[] getVersion() { return new String[] {"aligndistil " + version()}; }
    }

    /** {@code version}: the version on stdout. */
    @Command(name = "version", description = "Print the version.", mixinStandardHelpOptions = false)
    static final class VersionCommand implements Callable<Integer> {
        @Option(names = {"-h", "--help"}, usageHelp = true, description = "Show this help and exit.") boolean help;
        private final Main root;

        VersionCommand(Main root) { this.root = root; }

        @Override
        public Integer call() {
            root.out.println("aligndistil " + version());
            return 0;
        }
    }

    /** {@code completion}: a bash completion script on stdout. */
    @Command(name = "completion",
            description = "Print a bash completion script for aligndistil on stdout: source <(./aligndistil completion), or save it under /etc/bash_completion.d/.")
    static final class Completion implements Callable<Integer> {
        @Option(names = {"-h", "--help"}, usageHelp = true, description = "Show this help and exit.") boolean help;
        private final Main root;

        Completion(Main root) { this.root = root; }

        @Override
        public Integer call() {
            root.out.print(AutoComplete.bash("aligndistil", commandLine(new Main(root.out, root.err))));
            return 0;
        }
    }

    /** {@code diagnose}: what this machine offers. */
    @Command(name = "diagnose", description = "What this machine offers: backends, native libraries, CPU code path, GPUs, NVTX.")
    static final class Diagnose implements Callable<Integer> {
        @Option(names = {"-h", "--help"}, usageHelp = true, description = "Show this help and exit.") boolean help;
        private final Main root;

        Diagnose(Main root) { this.root = root; }

        @Override
        public Integer call() {
            PrintStream out = root.out;
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
}
