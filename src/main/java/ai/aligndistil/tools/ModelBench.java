package ai.aligndistil.tools;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.InferenceMode;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import ai.aligndistil.train.AdamW;
import ai.aligndistil.train.GradClip;
import ai.aligndistil.model.CausalLM;
import ai.aligndistil.model.HfCheckpoint;
import ai.aligndistil.model.Tensors;
import ai.aligndistil.model.TorchRuntime;

/**
 * Measures load time, forward-pass time and training-step time and memory of a model folder on this machine.
 * Not part of the tests.
 *
 * <pre>
 * java -Daligndistil.threads=2 ... ai.aligndistil.tools.ModelBench --model DIR --mode forward|train
 *      [--dtype f32|bf16] [--seq 512] [--batch 1] [--iters 3] [--mapped true]
 * </pre>
 *
 * forward: {@code iters} forward passes under InferenceMode after one warm-up. train: {@code iters} full steps
 * (forward, cross-entropy on the next token, backward, clip to 1.0, AdamW with float32 state) after one warm-up.
 * load: only load ({@code --mapped true}: {@link HfCheckpoint#loadMapped}, zero-copy, file dtype).
 * Prints one line with the best and median seconds, the peak resident memory (VmHWM) while loading, and the
 * peak during the measured phase (VmHWM reset after loading).
 */
@SuppressWarnings("try")
@Command(name = "ModelBench", mixinStandardHelpOptions = true, sortOptions = false,
        description = "Load time, forward-pass time and training-step time and memory of a model folder on this machine.")
public final class ModelBench implements java.util.concurrent.Callable<Integer> {
    @Option(names = "--model", required = true, paramLabel = "DIR", description = "Hugging Face model folder.")
    Path dir;
    @Option(names = "--mode", defaultValue = "forward", paramLabel = "forward|train|load",
            description = "forward: passes under InferenceMode; train: full steps with AdamW; load: loading only (default: ${DEFAULT-VALUE}).")
    String mode;
    @Option(names = "--dtype", defaultValue = "f32", paramLabel = "f32|bf16", description = "Weights dtype (default: ${DEFAULT-VALUE}).")
    String dtype;
    @Option(names = "--seq", defaultValue = "512", paramLabel = "N", description = "Sequence length in tokens (default: ${DEFAULT-VALUE}).")
    int seq;
    @Option(names = "--batch", defaultValue = "1", paramLabel = "N", description = "Sequences per pass (default: ${DEFAULT-VALUE}).")
    int batch;
    @Option(names = "--iters", defaultValue = "3", paramLabel = "N", description = "Measured iterations after one warm-up (default: ${DEFAULT-VALUE}).")
    int iters;
    @Option(names = "--mapped", defaultValue = "false", arity = "0..1", paramLabel = "true|false",
            description = "Load zero-copy from the mapped file in its dtype (HfCheckpoint.loadMapped) (default: ${DEFAULT-VALUE}).")
    boolean mapped;

    public static void main(String[] args) {
        System.exit(new CommandLine(new ModelBench()).execute(args));
    }

    @Override
    public Integer call() throws IOException {
        String dtype = this.dtype;
        TorchRuntime.init();
        long t0 = System.nanoTime();
        CausalLM model = mapped ? HfCheckpoint.loadMapped(dir) : HfCheckpoint.load(dir, Tensors.parseDtype(dtype));
        if (mapped) dtype = Tensors.hfName(model.dtype()) + "(mapped)";
        double load = (System.nanoTime() - t0) / 1e9;
        long rssLoaded = status("VmRSS"), peakLoad = status("VmHWM");
        // Reset the peak so the reported peak belongs to the forward/training phase, not to loading (which
        // briefly holds the mapped file and the converted weights together).
        boolean reset = resetPeak();
        int v = model.config().vocabSize();
        torch.manual_seed(1);
        Tensor ids = torch.randint(v, new long[] {batch, seq + 1}, Tensors.options(ScalarType.Long));
        Tensor input = ids.narrow(1, 0, seq), target = ids.narrow(1, 1, seq).reshape(-1);
        double[] secs = new double[iters];
        AdamW opt = mode.equals("train") ? new AdamW(model.namedParameters(), AdamW.Options.spec()) : null;
        for (int i = mode.equals("load") ? iters : -1; i < iters; i++) {
            long s0 = System.nanoTime();
            if (opt == null) {
                try (PointerScope s = new PointerScope(); InferenceMode im = new InferenceMode()) {
                    model.forward(input).sum().item_double();
                }
            } else {
                try (PointerScope s = new PointerScope()) {
                    opt.zeroGrad();
                    Tensor logits = model.forward(input);
                    Tensor loss = torch.cross_entropy_loss(logits.reshape(-1, v).to(ScalarType.Float), target);
                    loss.backward();
                    GradClip.clip(model.namedParameters().values(), 1.0);
                    opt.step(1e-6);
                }
            }
            if (i >= 0) secs[i] = (System.nanoTime() - s0) / 1e9;
        }
        double[] sorted = secs.clone();
        Arrays.sort(sorted);
        if (mode.equals("load")) sorted = new double[] {0};
        System.out.printf("model=%s params=%,d mode=%s dtype=%s batch=%d seq=%d threads=%d load=%.1fs peak_rss_load=%.2fGB "
                        + "rss_after_load=%.2fGB best=%.2fs median=%.2fs peak_rss_%s=%.2fGB%n",
                dir.getFileName(), model.config().parameterCount(), mode, dtype, batch, seq, TorchRuntime.threads(), load,
                peakLoad / 1048576.0, rssLoaded / 1048576.0, sorted[0], sorted[sorted.length / 2], reset ? mode : "incl_load",
                status("VmHWM") / 1048576.0);
        return 0;
    }

    /** Resets VmHWM to the current RSS (Linux: "5" to /proc/self/clear_refs); false where not permitted. */
    static boolean resetPeak() {
        try {
            Files.writeString(Path.of("/proc/self/clear_refs"), "5");
            return true;
        } catch (IOException | RuntimeException e) {
            return false;
        }
    }

    /** A /proc/self/status field in kB. */
    static long status(String key) throws IOException {
        for (String line : Files.readAllLines(Path.of("/proc/self/status")))
            if (line.startsWith(key + ":")) return Long.parseLong(line.replaceAll("[^0-9]", ""));
        return -1;
    }
}
