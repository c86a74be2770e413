package ai.aligndistil.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import picocli.CommandLine;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Model.OptionSpec;

import ai.aligndistil.pipeline.config.Options;
import ai.aligndistil.pipeline.config.PipelineException;
import ai.aligndistil.pipeline.config.StageCommandLine;
import ai.aligndistil.pipeline.stages.DistillStage;
import ai.aligndistil.pipeline.stages.DpoStage;
import ai.aligndistil.pipeline.stages.SftStage;

/** The command line's contract: help, usage errors, -v/-q anywhere, --config precedence, completion. */
class CommandLineTest {
    @TempDir Path tmp;

    record Run(int code, String out, String err) {}

    static Run main(String... args) {
        ByteArrayOutputStream o = new ByteArrayOutputStream(), e = new ByteArrayOutputStream();
        int code = Main.run(args, new PrintStream(o, true, StandardCharsets.UTF_8), new PrintStream(e, true, StandardCharsets.UTF_8));
        return new Run(code, o.toString(StandardCharsets.UTF_8), e.toString(StandardCharsets.UTF_8));
    }

    static CommandLine tree() {
        PrintStream nul = new PrintStream(new ByteArrayOutputStream());
        return Main.commandLine(Main.forTest(nul, nul));
    }

    /** Every command but help (which takes a command name). */
    static List<String> commands() {
        List<String> c = new ArrayList<>(tree().getSubcommands().keySet());
        c.remove("help");
        return c;
    }

    @Test
    void everyCommandsHelpIsOnStdoutWithExitZeroAndDescribesEveryOption() {
        List<String> cmds = commands();
        for (String s : List.of("demo", "replay", "self-check", "logits", "task", "task-pairs", "sft", "dpo", "distill", "eval", "diagnose", "version", "completion"))
            assertTrue(cmds.contains(s), "command " + s + " missing: " + cmds);
        for (String cmd : cmds) {
            Run r = main(cmd, "--help");
            assertEquals(0, r.code(), cmd + ": " + r.err());
            assertTrue(r.out().contains("Usage: aligndistil " + cmd), cmd + ": " + r.out());
            assertEquals("", r.err(), cmd);
            CommandSpec spec = tree().getSubcommands().get(cmd).getCommandSpec();
            for (OptionSpec o : spec.options()) {
                String d = String.join(" ", o.description()).replaceAll("\\(default: [^)]*\\)", "").strip();
                assertFalse(d.isEmpty(), cmd + " " + o.longestName() + " has no description");
                if (!o.hidden()) assertTrue(r.out().contains(o.longestName().replace("--", "")), cmd + ": help lacks " + o.longestName());
            }
            for (String n : new String[] {"-v", "--verbose", "-q", "--quiet"})
                assertTrue(spec.findOption(n) != null, cmd + " does not take " + n);
        }
        // replay and self-check are the kernel jar's own picocli commands, registered as subcommands
        Run r = main("replay", "--help");
        assertTrue(r.out().contains("--variant") && r.out().contains("--backend"), r.out());
        // the help shows defaults with their values, and the negatable form of a flag
        Run d = main("distill", "--help");
        assertTrue(d.out().contains("(default: aligndistil)") && d.out().contains("--[no-]length-norm"), d.out());
        assertEquals(0, main("--help").code());
        assertEquals(0, main("help", "sft").code());
    }

    @Test
    void usageErrorsExitTwoInAtMostTwoLines() {
        for (String cmd : commands()) {
            Run r = main(cmd, "--frobnicate");
            assertEquals(2, r.code(), cmd + ": " + r.err());
            long lines = r.err().strip().lines().count();
            assertTrue(lines >= 1 && lines <= 2, cmd + ": at most two lines: " + r.err());
            assertTrue(r.err().contains("frobnicate"), cmd + ": " + r.err());
            assertEquals("", r.out(), cmd);
        }
        for (String[] args : new String[][] {{"nonsense"}, {"sft", "--lr"}, {"sft", "stray"}, {"dpo", "--model", "m", "--data", "d"},
                {"demo", "--replay", "--seed", "3"}, {"sft", "--profile-steps", "x"}}) {
            Run r = main(args);
            assertEquals(2, r.code(), String.join(" ", args) + ": " + r.err());
            assertTrue(r.err().strip().lines().count() <= 2, String.join(" ", args) + ": " + r.err());
        }
        Run missing = main("dpo", "--model", "m", "--data", "d");
        assertTrue(missing.err().contains("missing --out") && missing.err().contains("see 'aligndistil dpo --help'"), missing.err());
        // no command at all: the usage on stderr, exit 2
        Run none = main();
        assertEquals(2, none.code());
        assertTrue(none.err().contains("Usage: aligndistil"), none.err());
    }

    @Test
    void verboseAndQuietWorkBeforeAndAfterTheCommand() {
        for (String[] args : new String[][] {{"-v", "version"}, {"version", "-v"}, {"version", "--verbose"}, {"-q", "version"},
                {"version", "--quiet"}, {"sft", "-v", "--help"}})
            assertEquals(0, main(args).code(), String.join(" ", args));
        // the stages' --quiet is the inherited one: one option
        CommandLine cl = tree();
        Main root = cl.getCommand();
        cl.parseArgs("sft", "--model", "m", "-q");
        CommandSpec sft = cl.getSubcommands().get("sft").getCommandSpec();
        assertTrue(StageCommandLine.options(SftStage.spec(), sft, root.quiet()).bool("quiet"));
        cl = tree();
        root = cl.getCommand();
        cl.parseArgs("-q", "sft", "--model", "m");
        assertTrue(StageCommandLine.options(SftStage.spec(), cl.getSubcommands().get("sft").getCommandSpec(), root.quiet()).bool("quiet"));
        cl = tree();
        root = cl.getCommand();
        cl.parseArgs("sft", "--model", "m");
        assertFalse(StageCommandLine.options(SftStage.spec(), cl.getSubcommands().get("sft").getCommandSpec(), root.quiet()).bool("quiet"));
    }

    /** The log level is fixed when the first logger is created: checked in a fresh JVM per case. */
    @Test
    void verboseAfterTheCommandLogsInfoInAFreshJvm() throws Exception {
        String quiet = java(List.of("diagnose")).err();
        String verbose = java(List.of("diagnose", "-v")).err();
        assertFalse(quiet.contains("INFO"), quiet);
        assertTrue(verbose.contains("INFO") && verbose.contains("aligndistil: backend"), verbose);
    }

    private Run java(List<String> args) throws IOException, InterruptedException {
        List<String> cmd = new ArrayList<>(List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                "--enable-native-access=ALL-UNNAMED", "-cp", System.getProperty("java.class.path"), Main.class.getName()));
        cmd.addAll(args);
        Path o = tmp.resolve("out.txt"), e = tmp.resolve("err.txt");
        Process p = new ProcessBuilder(cmd).redirectOutput(o.toFile()).redirectError(e.toFile()).start();
        assertTrue(p.waitFor(120, TimeUnit.SECONDS), "the JVM did not finish");
        Run r = new Run(p.exitValue(), Files.readString(o), Files.readString(e));
        assertEquals(0, r.code(), r.err());
        return r;
    }

    @Test
    void configFileSitsBetweenFlagsAndDefaultsAndRejectsUnknownKeys() throws IOException {
        Path cfg = tmp.resolve("c.json");
        Files.writeString(cfg, "{\"lr\": 0.5, \"batch\": 7, \"resume\": false, \"sft\": {\"batch\": 9}, \"dpo\": {\"batch\": 3}}");
        Options o = SftStage.spec().parse("--config", cfg.toString(), "--lr", "0.25");
        assertEquals(0.25, o.num("lr"));             // flag over file
        assertEquals(9, o.integer("batch"));         // the stage's section over the shared keys
        assertEquals(1, o.integer("epochs"));        // default
        assertFalse(o.bool("resume"));               // a flag's value from the file
        assertTrue(SftStage.spec().parse("--config", cfg.toString(), "--resume").bool("resume"));   // flag over file
        assertEquals(3, DpoStage.spec().parse("--config=" + cfg).integer("batch"));
        assertEquals(7, DistillStage.spec().parse("--config", cfg.toString()).integer("batch"));

        Path bad = tmp.resolve("bad.json");
        Files.writeString(bad, "{\"lr\": 0.5, \"frobnicate\": 1}");
        PipelineException e = assertThrows(PipelineException.class, () -> SftStage.spec().parse("--config", bad.toString()));
        assertTrue(e.usage() && e.getMessage().contains("bad.json") && e.getMessage().contains("frobnicate"), e.getMessage());
        Run r = main("sft", "--config", bad.toString(), "--model", "m");
        assertEquals(2, r.code(), r.err());
        assertTrue(r.err().contains("bad.json") && r.err().contains("unknown key 'frobnicate'"), r.err());
        Path shared = tmp.resolve("shared.json");
        Files.writeString(shared, "{\"_shared\": true, \"lr\": 0.5, \"frobnicate\": 1}");
        assertEquals(0.5, SftStage.spec().parse("--config", shared.toString()).num("lr"));
        Run unreadable = main("sft", "--config", tmp.resolve("none.json").toString(), "--model", "m");
        assertEquals(1, unreadable.code(), unreadable.err());
        assertTrue(unreadable.err().contains("none.json"), unreadable.err());
    }

    @Test
    void flagsKeepTheirSpellings() {
        Options d = DistillStage.spec().parse();
        assertTrue(d.bool("length-norm"));
        assertNull(d.str("beta2"));
        assertFalse(DistillStage.spec().parse("--no-length-norm").bool("length-norm"));
        assertFalse(DistillStage.spec().parse("--length-norm=false").bool("length-norm"));
        assertTrue(DistillStage.spec().parse("--no-length-norm", "--length-norm").bool("length-norm"));
        assertTrue(DpoStage.spec().parse("--reverse").bool("reverse"));
        assertFalse(DpoStage.spec().parse().bool("reverse"));
        assertFalse(SftStage.spec().parse("--no-resume").bool("resume"));
        Options s = SftStage.spec().parse("--max-steps", "3", "--lr=2e-5", "--system-prompt", "", "--quiet");
        assertEquals(3, s.integer("max-steps"));
        assertEquals(2e-5, s.num("lr"));
        assertEquals("", s.str("system-prompt"));
        assertTrue(s.bool("quiet"));
        PipelineException e = assertThrows(PipelineException.class, () -> SftStage.spec().parse("--frobnicate"));
        assertTrue(e.usage() && e.getMessage().contains("--frobnicate"), e.getMessage());
    }

    @Test
    void completionPrintsABashScript() {
        Run r = main("completion");
        assertEquals(0, r.code(), r.err());
        assertTrue(r.out().contains("complete -F") && r.out().contains("aligndistil"), r.out().substring(0, Math.min(400, r.out().length())));
        for (String cmd : List.of("distill", "replay", "--length-norm", "--max-steps", "--config")) assertTrue(r.out().contains(cmd), cmd);
    }

    @Test
    void versionPrintsTheVersion() {
        Run r = main("version");
        assertEquals(0, r.code());
        assertTrue(r.out().startsWith("aligndistil "), r.out());
        assertEquals(0, main("--version").code());
    }
}
