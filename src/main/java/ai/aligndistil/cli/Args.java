package ai.aligndistil.cli;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * A small command-line parser: {@code --name value}, {@code --name=value} and boolean {@code --flag} /
 * {@code --no-flag}. Unknown options and missing values are usage errors naming the option.
 */
public final class Args {
    private final String command;
    private final Map<String, String> values = new LinkedHashMap<>();
    private final List<String> positional = new ArrayList<>();

    /**
     * @param valued names of options that take a value
     * @param flags  names of boolean options (each also accepted as --no-NAME)
     */
    public Args(String command, String[] args, Set<String> valued, Set<String> flags) {
        this.command = command;
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            if (!a.startsWith("--")) {
                positional.add(a);
                continue;
            }
            String name = a.substring(2), value = null;
            int eq = name.indexOf('=');
            if (eq >= 0) {
                value = name.substring(eq + 1);
                name = name.substring(0, eq);
            }
            if (valued.contains(name)) {
                if (value == null) {
                    if (i + 1 >= args.length) throw CliException.usage(command + ": option --" + name + " needs a value");
                    value = args[++i];
                }
                values.put(name, value);
            } else if (flags.contains(name) && value == null) {
                values.put(name, "true");
            } else if (name.startsWith("no-") && flags.contains(name.substring(3)) && value == null) {
                values.put(name.substring(3), "false");
            } else {
                throw CliException.usage(command + ": unknown option --" + name);
            }
        }
    }

    public List<String> positional() { return positional; }

    public boolean has(String name) { return values.containsKey(name); }

    public String get(String name, String def) { return values.getOrDefault(name, def); }

    public String require(String name) {
        String v = values.get(name);
        if (v == null) throw CliException.usage(command + ": missing --" + name);
        return v;
    }

    public boolean flag(String name, boolean def) {
        String v = values.get(name);
        return v == null ? def : Boolean.parseBoolean(v);
    }

    public double number(String name, double def) {
        String v = values.get(name);
        if (v == null) return def;
        try {
            return Double.parseDouble(v);
        } catch (NumberFormatException e) {
            throw CliException.usage(command + ": --" + name + " expects a number, got '" + v + "'");
        }
    }

    public long integer(String name, long def) {
        String v = values.get(name);
        if (v == null) return def;
        try {
            return Long.parseLong(v);
        } catch (NumberFormatException e) {
            throw CliException.usage(command + ": --" + name + " expects an integer, got '" + v + "'");
        }
    }
}
