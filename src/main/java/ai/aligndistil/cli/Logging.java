package ai.aligndistil.cli;

/**
 * The command line's logging levels. Everything logs through SLF4J with slf4j-simple (configured by
 * {@code simplelogger.properties}: stderr, no thread or logger names); the kernel's and io's {@code System.Logger}
 * reach the same configuration through {@code slf4j-jdk-platform-logging}. Default level WARN, {@code -v} INFO,
 * {@code -q} ERROR only; a level given with {@code -Dorg.slf4j.simpleLogger.defaultLogLevel=...} wins.
 *
 * <p>slf4j-simple reads its level once, when the first logger is created: {@link Main} sets it after parsing the
 * command line and before running the command (creating no logger before), so it holds for the whole process.
 */
final class Logging {
    private Logging() {}

    static final String LEVEL_PROPERTY = "org.slf4j.simpleLogger.defaultLogLevel";
    private static boolean userLevel = System.getProperty(LEVEL_PROPERTY) != null;

    static void configure(boolean verbose, boolean quiet) {
        if (userLevel) return;
        System.setProperty(LEVEL_PROPERTY, quiet ? "error" : verbose ? "info" : "warn");
    }
}
