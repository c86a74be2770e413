package ai.aligndistil.model;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.InferenceMode;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

import ai.aligndistil.train.AdamW;
import ai.aligndistil.train.GradClip;

/**
 * Measures load time, forward-pass time and training-step time and memory of a model folder on this machine.
 * Not part of the tests.
 *
 * <pre>
 * java -Daligndistil.threads=2 ... ai.aligndistil.model.ModelBench --model DIR --mode forward|train
 *      [--dtype f32|bf16] [--seq 512] [--batch 1] [--iters 3]
 * </pre>
 *
 * forward: {@code iters} forward passes under InferenceMode after one warm-up. train: {@code iters} full steps
 * (forward, cross-entropy on the next token, backward, clip to 1.0, AdamW with float32 state) after one warm-up.
 * Prints one line with the best and median seconds and the peak resident memory (VmHWM).
 */
public final class ModelBench {
    private ModelBench() {}

    public static void main(String[] args) throws IOException {
        Path dir = null;
        String mode = "forward", dtype = "f32";
        int seq = 512, batch = 1, iters = 3;
        for (int i = 0; i + 1 < args.length; i += 2) {
            switch (args[i]) {
                case "--model" -> dir = Path.of(args[i + 1]);
                case "--mode" -> mode = args[i + 1];
                case "--dtype" -> dtype = args[i + 1];
                case "--seq" -> seq = Integer.parseInt(args[i + 1]);
                case "--batch" -> batch = Integer.parseInt(args[i + 1]);
                case "--iters" -> iters = Integer.parseInt(args[i + 1]);
                default -> throw new IllegalArgumentException("unknown option " + args[i]);
            }
        }
        if (dir == null) throw new IllegalArgumentException("--model DIR is required");
        TorchRuntime.init();
        long t0 = System.nanoTime();
        CausalLM model = HfCheckpoint.load(dir, Tensors.parseDtype(dtype));
        double load = (System.nanoTime() - t0) / 1e9;
        long rssLoaded = status("VmRSS");
        int v = model.config().vocabSize();
        torch.manual_seed(1);
        Tensor ids = torch.randint(v, new long[] {batch, seq + 1}, Tensors.options(ScalarType.Long));
        Tensor input = ids.narrow(1, 0, seq), target = ids.narrow(1, 1, seq).reshape(-1);
        double[] secs = new double[iters];
        AdamW opt = mode.equals("train") ? new AdamW(model.namedParameters(), AdamW.Options.spec()) : null;
        for (int i = -1; i < iters; i++) {
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
        System.out.printf("model=%s params=%,d mode=%s dtype=%s batch=%d seq=%d threads=%d load=%.1fs rss_after_load=%.2fGB "
                        + "best=%.2fs median=%.2fs peak_rss=%.2fGB%n",
                dir.getFileName(), model.config().parameterCount(), mode, dtype, batch, seq, TorchRuntime.threads(), load,
                rssLoaded / 1048576.0, sorted[0], sorted[sorted.length / 2], status("VmHWM") / 1048576.0);
    }

    /** A /proc/self/status field in kB. */
    static long status(String key) throws IOException {
        for (String line : Files.readAllLines(Path.of("/proc/self/status")))
            if (line.startsWith(key + ":")) return Long.parseLong(line.replaceAll("[^0-9]", ""));
        return -1;
    }
}
