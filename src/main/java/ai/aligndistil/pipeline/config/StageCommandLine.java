package ai.aligndistil.pipeline.config;

import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;

import picocli.CommandLine;
import picocli.CommandLine.Model.ArgSpec;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Model.OptionSpec;
import picocli.CommandLine.ParseResult;

/**
 * A stage's picocli command, built from its {@link Options.Spec} (the one declaration of its options): one
 * {@code --name} option per key with the declared help text and default, booleans as negatable flags
 * ({@code --flag} / {@code --no-flag}), {@code --config FILE} read by a default-value provider (so the
 * precedence is flags over the file over the declared defaults), and {@code -h/--help}. {@link #options} turns
 * a finished parse into the {@link Options} value bag the stages read.
 */
public final class StageCommandLine {
    private StageCommandLine() {}

    /** The name of the key that the CLI's inherited {@code -q/--quiet} stands for (and that a stage declares). */
    public static final String QUIET = "quiet";

    static final String CONFIG_HELP = "JSON file of option values: keys spelled as the flags without dashes; a section named after "
            + "the command ({\"sft\": {...}}) overrides the shared keys; unknown keys are errors unless \"_shared\": true; "
            + "flags given here override the file";

    /**
     * The default-value provider: for an option not given on the command line, the value of {@code --config FILE}
     * (read once per file) or else the declared default. Booleans get none here (see {@link #options}). An
     * unreadable file or an unknown key is kept and thrown by {@link #options}, after the parse.
     */
    static final class ConfigDefaults implements CommandLine.IDefaultValueProvider {
        private final Options.Spec spec;
        private CommandSpec command;
        private Path path;
        private Map<String, String> values = Map.of();
        private RuntimeException error;

        ConfigDefaults(Options.Spec spec) { this.spec = spec; }

        @Override
        public String defaultValue(ArgSpec arg) {
            String k = key(arg);
            if (k == null || k.equals("config") || !spec.names().contains(k) || spec.isFlag(k)) return null;
            Map<String, String> file = file();
            return file.containsKey(k) ? file.get(k) : spec.defaultValue(k);
        }

        /** The values of the config file the command names (empty without one). */
        Map<String, String> file() {
            OptionSpec opt = command.findOption("--config");
            String p = opt == null ? null : opt.getValue();
            if (p == null || p.isEmpty()) return Map.of();
            Path now = Path.of(p);
            if (!now.equals(path)) {
                path = now;
                error = null;
                try {
                    values = spec.readConfig(now);
                } catch (RuntimeException e) {
                    error = e;
                    values = Map.of();
                }
            }
            return values;
        }
    }

    /**
     * The command of a stage.
     *
     * @param userObject what picocli runs ({@code Callable}/{@code Runnable}), or null for a parse only
     * @param ownQuiet   declare the stage's {@code quiet} key as its own {@code -q/--quiet} flag; false where a parent
     *                   command supplies an inherited {@code -q/--quiet} instead (see {@link #options})
     */
    public static CommandSpec commandSpec(Options.Spec spec, Object userObject, boolean ownQuiet) {
        CommandSpec cs = userObject == null ? CommandSpec.create() : CommandSpec.wrapWithoutInspection(userObject);
        cs.name(spec.stage());
        cs.addOption(OptionSpec.builder("-h", "--help").usageHelp(true).description("Show this help and exit.").build());
        cs.addOption(OptionSpec.builder("--config").paramLabel("FILE").type(String.class).description(CONFIG_HELP).build());
        for (String k : spec.names()) {
            if (k.equals(QUIET) && !ownQuiet) continue;
            String d = spec.description(k);
            String def = spec.defaultValue(k);
            OptionSpec.Builder b = k.equals(QUIET) ? OptionSpec.builder("-q", "--" + k) : OptionSpec.builder("--" + k);
            if (spec.isFlag(k)) {
                // No picocli default: with a default of true picocli would flip the meaning of --flag / --no-flag.
                // The value of an absent flag comes from the config file or the declaration (options()).
                b.type(Boolean.class).arity("0..1").negatable(true).paramLabel("true|false")
                        .description((d == null ? "" : d) + " (default: " + ("true".equals(def) ? "on" : "off") + ")");
            } else {
                b.type(String.class).paramLabel(label(k, def))
                        .description((d == null ? "" : d) + (def == null ? "" : " (default: ${DEFAULT-VALUE})"));
            }
            cs.addOption(b.build());
        }
        ConfigDefaults config = new ConfigDefaults(spec);
        config.command = cs;
        cs.defaultValueProvider(config);
        return cs;
    }

    /**
     * The options of a parsed stage command.
     *
     * @param quiet the parent's inherited {@code -q/--quiet} when the command has none of its own: true/false where
     *              it was given, null where not (then the config file or the declared default decides)
     */
    public static Options options(Options.Spec spec, CommandSpec cs, Boolean quiet) {
        if (!(cs.defaultValueProvider() instanceof ConfigDefaults config))
            throw new IllegalArgumentException(spec.stage() + ": not a command built by StageCommandLine.commandSpec");
        Map<String, String> file = config.file();
        if (config.error != null) throw config.error;
        ParseResult pr = cs.commandLine().getParseResult();
        Map<String, String> v = new LinkedHashMap<>();
        for (String k : spec.names()) {
            OptionSpec o = cs.findOption("--" + k);
            String fallback = file.containsKey(k) ? file.get(k) : spec.defaultValue(k);
            if (o == null || o.inherited()) v.put(k, k.equals(QUIET) && quiet != null ? quiet.toString() : fallback);
            else if (spec.isFlag(k)) v.put(k, pr != null && pr.hasMatchedOption(o) ? String.valueOf((Object) o.getValue()) : fallback);
            else v.put(k, pr != null && pr.hasMatchedOption(o) ? o.getValue() : fallback);
        }
        return spec.of(v);
    }

    /** Parses {@code args} for the stage alone (its own {@code --quiet}); picocli's errors become usage errors. */
    public static Options parse(Options.Spec spec, String... args) {
        CommandSpec cs = commandSpec(spec, null, true);
        CommandLine cl = new CommandLine(cs);
        cl.setExpandAtFiles(false);
        cl.setOverwrittenOptionsAllowed(true);   // a later flag wins, as the demo's stage lines rely on
        try {
            cl.parseArgs(args);
        } catch (CommandLine.ParameterException e) {
            throw PipelineException.usage(spec.stage() + ": " + e.getMessage());
        }
        return options(spec, cs, null);
    }

    /** The declared key of an option ({@code --lr} to {@code lr}), or null. */
    static String key(ArgSpec arg) {
        if (!(arg instanceof OptionSpec o)) return null;
        String n = o.longestName();
        return n.startsWith("--") ? n.substring(2) : null;
    }

    /** The parameter label in the help, from the default (N, X) or else the option's name. */
    static String label(String k, String def) {
        if (def != null && def.matches("-?[0-9]+")) return "N";
        if (def != null && def.matches("-?[0-9.]+([eE]-?[0-9]+)?")) return "X";
        return switch (k) {
            case "model", "out", "dpo", "reverse-dpo", "ref", "init", "task", "policy" -> "DIR";
            case "data", "eval-prompts", "prompts", "pairs" -> "FILE";
            case "models" -> "NAME=DIR,...";
            case "profile-steps" -> "N:M";
            case "profile-step" -> "N";
            case "beta2" -> "X";
            case "system-prompt" -> "TEXT";
            case "eos" -> "TOKEN";
            default -> "NAME";
        };
    }
}
