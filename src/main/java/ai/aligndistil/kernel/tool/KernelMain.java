package ai.aligndistil.kernel.tool;

import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.IExecutionExceptionHandler;
import picocli.CommandLine.IParameterExceptionHandler;
import picocli.CommandLine.IVersionProvider;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.ScopeType;

import java.io.PrintStream;
import java.io.PrintWriter;
import java.nio.charset.StandardCharsets;
import java.util.logging.Level;
import java.util.logging.Logger;

/**
 * {@code Main-Class} of {@code target/aligndistil-kernel.jar}, the kernel-only jar for embedding (the
 * {@code kernel} and {@code io} packages, the native libraries and a relocated picocli; nothing else on the class
 * path): {@code java --enable-native-access=ALL-UNNAMED -jar aligndistil-kernel.jar replay --in B --out R} and
 * {@code ... self-check}. This package imports only {@code kernel} and {@code io} of the project.
 *
 * <p>Exit codes: 0 done; 1 a failure while running (one line on stderr); 2 a usage error (at most two lines on
 * stderr: the problem, and where the help is). {@code --help} prints to stdout and exits 0. {@code -v/--verbose}
 * and {@code -q/--quiet} work before or after the command; the kernel logs through {@link System.Logger}, which
 * here is java.util.logging: WARNING by default, INFO with {@code -v}, errors only with {@code -q}.
 */
@Command(name = "aligndistil-kernel", mixinStandardHelpOptions = true, versionProvider = KernelMain.Version.class,
        subcommands = {ReplayCommand.class, SelfCheckCommand.class},
        description = {"The AlignDistil fused loss on its own: replay a dumped batch, or check this machine's backend against the reference."})
public final class KernelMain implements Runnable {
    @CommandLine.Spec
    CommandSpec spec;

    @Option(names = {"-v", "--verbose"}, scope = ScopeType.INHERIT, description = "log INFO lines, such as the backend choice (default: warnings only)")
    void verbose(boolean on) {
        if (on) logLevel(Level.INFO);
    }

    @Option(names = {"-q", "--quiet"}, scope = ScopeType.INHERIT, description = "log errors only (default: warnings too)")
    void quiet(boolean on) {
        if (on) logLevel(Level.SEVERE);
    }

    @Override
    public void run() {
        throw new CommandLine.ParameterException(spec.commandLine(), "missing command (replay or self-check)");
    }

    public static void main(String[] args) {
        System.exit(run(args, System.out, System.err));
    }

    /** Runs the kernel jar's command line and returns the exit code (never calls System.exit: usable from tests). */
    public static int run(String[] args, PrintStream out, PrintStream err) {
        logLevel(Level.WARNING);
        CommandLine cl = configure(new CommandLine(new KernelMain()));
        cl.setOut(new PrintWriter(out, true, StandardCharsets.UTF_8));
        cl.setErr(new PrintWriter(err, true, StandardCharsets.UTF_8));
        return cl.execute(args);
    }

    /**
     * Runs one command ({@link ReplayCommand} or {@link SelfCheckCommand}) as its own command line named
     * {@code name} (for a host CLI that dispatches by hand), leaving the logging configuration alone.
     */
    public static int runCommand(String name, Object command, String[] args, PrintStream out, PrintStream err) {
        CommandLine cl = configure(new CommandLine(command)).setCommandName(name);
        cl.setOut(new PrintWriter(out, true, StandardCharsets.UTF_8));
        cl.setErr(new PrintWriter(err, true, StandardCharsets.UTF_8));
        return cl.execute(args);
    }

    /**
     * Sets the error contract on a command line (this one, or a host CLI that adds {@link ReplayCommand} and
     * {@link SelfCheckCommand} as subcommands): usage errors in at most two lines with exit 2, unexpected
     * exceptions in one line with exit 1 ({@code -Daligndistil.debug=true} adds the stack trace).
     */
    public static CommandLine configure(CommandLine cl) {
        cl.setParameterExceptionHandler(USAGE);
        cl.setExecutionExceptionHandler(FAILURE);
        return cl;
    }

    static final IParameterExceptionHandler USAGE = (ex, args) -> {
        CommandLine cl = ex.getCommandLine();
        PrintWriter err = cl.getErr();
        String name = cl.getCommandSpec().qualifiedName();
        String message = ex.getMessage();
        // picocli checks required options before unknown ones; the unknown option is the better hint ("--in" misspelt)
        if (ex instanceof CommandLine.MissingParameterException && !cl.getUnmatchedArguments().isEmpty())
            message = "Unknown option: '" + cl.getUnmatchedArguments().get(0) + "'";
        err.println(name + ": " + firstLine(message));
        err.println("(see '" + name + " --help')");
        err.flush();
        return cl.getCommandSpec().exitCodeOnInvalidInput();
    };

    static final IExecutionExceptionHandler FAILURE = (ex, cl, parseResult) -> {
        PrintWriter err = cl.getErr();
        err.println(cl.getCommandSpec().qualifiedName() + ": " + ex.getClass().getSimpleName() + ": " + firstLine(ex.getMessage()));
        if (Boolean.getBoolean("aligndistil.debug")) ex.printStackTrace(err);
        err.flush();
        return cl.getCommandSpec().exitCodeOnExecutionException();
    };

    /** Prints one line "COMMAND: message" on the command's stderr and returns exit code 1. */
    static int fail(CommandSpec spec, String message) {
        PrintWriter err = spec.commandLine().getErr();
        err.println(spec.qualifiedName() + ": " + firstLine(message));
        err.flush();
        return 1;
    }

    private static String firstLine(String s) {
        if (s == null) return "(no message)";
        int nl = s.indexOf('\n');
        return nl < 0 ? s : s.substring(0, nl);
    }

    private static void logLevel(Level level) {
        if (System.getProperty("java.util.logging.SimpleFormatter.format") == null)
            System.setProperty("java.util.logging.SimpleFormatter.format", "%4$s: %5$s%6$s%n");
        Logger root = Logger.getLogger("");
        root.setLevel(level);
        for (var h : root.getHandlers()) h.setLevel(level);
    }

    /** The version from the jar's manifest (Implementation-Version), or "(development build)". */
    public static final class Version implements IVersionProvider {
        @Override
        public String[] getVersion() {
            String v = KernelMain.class.getPackage().getImplementationVersion();
            return new String[] {"aligndistil " + (v == null ? "(development build)" : v)};
        }
    }
}
