package ai.aligndistil.pipeline;

import java.io.PrintStream;

/** {@code demo-pipeline}: placeholder while the stages land. */
public final class Demo {
    private Demo() {}

    public static Options.Spec spec() { return new Options.Spec("demo-pipeline").value("out", null).value("seed", 1); }

    public static int run(Options o, PrintStream out, PrintStream err) { return 0; }
}
