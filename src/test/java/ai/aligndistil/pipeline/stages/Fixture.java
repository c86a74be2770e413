package ai.aligndistil.pipeline.stages;

import java.io.IOException;
import java.io.PrintStream;
import java.io.OutputStream;
import java.nio.file.Path;

import ai.aligndistil.pipeline.stages.TaskFiles;
import ai.aligndistil.pipeline.config.Options;

/** A very small built-in task for tests: tiny sizes, pairs sampled from the random base model. */
public final class Fixture {
    private Fixture() {}

    public static final PrintStream NULL = new PrintStream(OutputStream.nullOutputStream());

    public static Path task(Path dir) throws IOException {
        TaskFiles.generate(dir, 7, TaskFiles.Sizes.tiny());
        TaskFiles.makePairs(dir, dir.resolve("base"), 7, 64, NULL);
        return dir;
    }

    /** Options shared by the stage tests: the task's config, small batches, no progress bar. */
    public static String[] common(Path task, String... more) {
        String[] base = {"--config", task.resolve("pipeline.json").toString(), "--batch", "8", "--micro-batch", "4", "--epochs", "1",
                "--generate-max-len", "6", "--quiet", "--eval-every", "0", "--save-steps", "0"};
        String[] all = new String[base.length + more.length];
        System.arraycopy(base, 0, all, 0, base.length);
        System.arraycopy(more, 0, all, base.length, more.length);
        return all;
    }
}
