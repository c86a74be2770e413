package ai.aligndistil.tools;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.BoolOptional;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorArrayRefOptional;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import ai.aligndistil.io.Json;
import ai.aligndistil.io.DType;
import ai.aligndistil.kernel.FusedDistillLoss;
import ai.aligndistil.kernel.LossConfig;
import ai.aligndistil.model.CausalLM;
import ai.aligndistil.model.Devices;
import ai.aligndistil.model.MemoryPlan;
import ai.aligndistil.model.ModelConfig;
import ai.aligndistil.model.Tensors;
import ai.aligndistil.model.TorchRuntime;
import ai.aligndistil.train.AdamW;
import ai.aligndistil.train.GradClip;

/**
 * Times one AlignDistil optimiser step (one micro-batch) of a random model, split into its phases: the student's
 * forward, the two teachers' forwards (inference mode), the fused loss (the project's kernel: device pointers on
 * libtorch's current stream on CUDA, host memory on the CPU), the backward, and clipping + AdamW. Each phase ends with a
 * device synchronisation so its time is its own (the training loop itself does not synchronise between them).
 * Not part of the tests; results as JSON.
 *
 * <pre>
 * java ... ai.aligndistil.tools.StepBench [--preset qwen2.5-0.5b|qwen2.5-1.5b|tiny] [--device auto|cpu|cuda] [--dtype bf16|f32]
 *      [--tokens 2048] [--batch 1] [--steps 5] [--warmup 1] [--grad-checkpointing] [--out FILE.json]
 * </pre>
 *
 * {@code tiny} is a 2-layer, hidden-64, vocabulary-1000 Qwen2-shaped model, to check the tool on a CPU in seconds.
 * Prints one JSON object (the median milliseconds of each phase over the timed steps, the memory plan, the peak memory)
 * and writes it to {@code --out} when given.
 */
@SuppressWarnings("try")
@Command(name = "StepBench", mixinStandardHelpOptions = true, sortOptions = false,
        description = "Times one AlignDistil step (student forward, teacher forwards, fused loss, backward, AdamW) of a random model, phase by phase; JSON on stdout.")
public final class StepBench implements java.util.concurrent.Callable<Integer> {
    private StepBench() {}

    static ModelConfig config(String preset) {
        if (!preset.equals("tiny")) return ModelConfig.fromJson(RandomCheckpoint.preset(preset));
        Map<String, Object> j = RandomCheckpoint.preset("qwen2.5-0.5b");
        j.put("hidden_size", 64L);
        j.put("intermediate_size", 160L);
        j.put("num_attention_heads", 4L);
        j.put("num_key_value_heads", 2L);
        j.put("num_hidden_layers", 2L);
        j.put("vocab_size", 1000L);
        return ModelConfig.fromJson(j);
    }

    @Option(names = "--preset", defaultValue = "qwen2.5-0.5b", paramLabel = "NAME",
            description = "Model shape: a RandomCheckpoint preset (qwen2.5-0.5b, qwen2.5-1.5b, ...) or tiny (default: ${DEFAULT-VALUE}).")
    String preset;
    @Option(names = "--device", defaultValue = "auto", paramLabel = "auto|cpu|cuda|cuda:N",
            description = "Where the three models run (default: ${DEFAULT-VALUE}).")
    String device;
    @Option(names = "--dtype", defaultValue = "bf16", paramLabel = "f32|bf16", description = "Weights and activations dtype (default: ${DEFAULT-VALUE}).")
    String dtype;
    @Option(names = "--tokens", defaultValue = "2048", paramLabel = "N", description = "Tokens per sequence (default: ${DEFAULT-VALUE}).")
    long tokens;
    @Option(names = "--batch", defaultValue = "1", paramLabel = "N", description = "Sequences per step (default: ${DEFAULT-VALUE}).")
    long batch;
    @Option(names = "--steps", defaultValue = "5", paramLabel = "N", description = "Timed steps after the warm-up (default: ${DEFAULT-VALUE}).")
    int steps;
    @Option(names = "--warmup", defaultValue = "1", paramLabel = "N", description = "Untimed warm-up steps (default: ${DEFAULT-VALUE}).")
    int warmup;
    @Option(names = "--grad-checkpointing", description = "Activation checkpointing per decoder layer in the student (default: off).")
    boolean ckpt;
    @Option(names = "--out", paramLabel = "FILE", description = "Also write the JSON result to this file (default: stdout only).")
    Path out;

    public static void main(String[] args) {
        System.exit(new CommandLine(new StepBench()).execute(args));
    }

    @Override
    public Integer call() throws IOException {
        Devices.Choice dev = Devices.resolve(device);
        ScalarType dt = Tensors.parseDtype(dtype);
        ModelConfig c = config(preset);
        MemoryPlan plan = MemoryPlan.of(c, dt.value == ScalarType.BFloat16.value ? 2 : 4, batch, tokens, 2, MemoryPlan.Kind.DISTILL, ckpt, 0, dev.cuda());
        System.err.println("step-bench: " + preset + " on " + dev + ", " + dtype + ", " + batch + " x " + tokens + " tokens; memory plan " + plan.describe());
        TorchRuntime.init();
        CausalLM student = new CausalLM(c, dt).initRandom(1, 0.02).to(dev).checkpointing(ckpt);
        CausalLM dpo = new CausalLM(c, dt).initRandom(2, 0.02).to(dev).freeze();
        CausalLM rev = new CausalLM(c, dt).initRandom(3, 0.02).to(dev).freeze();
        AdamW opt = new AdamW(student.namedParameters(), AdamW.Options.spec());
        FusedDistillLoss fused = FusedDistillLoss.create(LossConfig.defaults());
        String[] phases = {"forward_student", "forward_teachers", "loss", "backward", "optimizer"};
        List<double[]> times = new ArrayList<>();
        double lastLoss = Double.NaN;
        Devices.peakMemory(dev); // reset the peaks: what follows is the steps'
        for (int s = 0; s < warmup + steps; s++) {
            double[] ms = new double[phases.length];
            try (PointerScope scope = new PointerScope(); Arena arena = Arena.ofConfined()) {
                student.zeroGrad();
                Tensor ids = torch.randint(c.vocabSize(), new long[] {batch, tokens}, Tensors.options(ScalarType.Long));
                long t0 = sync(dev);
                Tensor logits = student.forward(ids);
                long t1 = sync(dev);
                ms[0] = (t1 - t0) / 1e6;
                Tensor zd = dpo.forwardInference(ids, null).contiguous(), zr = rev.forwardInference(ids, null).contiguous();
                long t2 = sync(dev);
                ms[1] = (t2 - t1) / 1e6;
                long v = logits.size(2);
                DType kdt = Tensors.is(logits, ScalarType.BFloat16) ? DType.BF16 : DType.F32;
                Tensor grad = Tensors.zeros(logits.scalar_type(), dev, batch, tokens, v);
                try (FusedDistillLoss.Batch b = fused.newBatch(batch, tokens, v)) {
                    if (dev.cuda()) {
                        b.student(Tensors.deviceSegment(logits), kdt).dpo(Tensors.deviceSegment(zd), kdt).second(Tensors.deviceSegment(zr), kdt)
                                .mask(null).grad(Tensors.deviceSegment(grad), kdt);
                        long stream = Devices.currentStream(dev);
                        b.runOnDevice(stream);
                        lastLoss = b.synchronize(stream);
                    } else {
                        b.student(Tensors.segment(logits), kdt).dpo(Tensors.segment(zd), kdt).second(Tensors.segment(zr), kdt)
                                .mask((MemorySegment) null).grad(Tensors.segment(grad), kdt);
                        lastLoss = b.run();
                    }
                }
                long t3 = sync(dev);
                ms[2] = (t3 - t2) / 1e6;
                logits.backward(grad, new BoolOptional(), false, new TensorArrayRefOptional());
                student.finishBackward();
                long t4 = sync(dev);
                ms[3] = (t4 - t3) / 1e6;
                GradClip.clip(student.namedParameters().values(), 1.0);
                opt.step(1e-6);
                long t5 = sync(dev);
                ms[4] = (t5 - t4) / 1e6;
            }
            if (s >= warmup) times.add(ms);
            System.err.printf(Locale.ROOT, "step-bench: step %d%s: %s ms%n", s + 1, s < warmup ? " (warm-up)" : "", Arrays.toString(round(ms)));
        }
        Map<String, Object> r = new LinkedHashMap<>();
        r.put("tool", "StepBench");
        r.put("preset", preset);
        r.put("parameters", c.parameterCount());
        r.put("device", dev.name());
        r.put("dtype", dtype);
        r.put("batch", batch);
        r.put("tokens", tokens);
        r.put("grad_checkpointing", ckpt);
        r.put("threads", TorchRuntime.threads());
        r.put("steps_timed", times.size());
        Map<String, Object> med = new LinkedHashMap<>();
        double total = 0;
        for (int p = 0; p < phases.length; p++) {
            double[] xs = new double[times.size()];
            for (int i = 0; i < xs.length; i++) xs[i] = times.get(i)[p];
            Arrays.sort(xs);
            double m = xs.length == 0 ? Double.NaN : xs[xs.length / 2];
            med.put(phases[p], m);
            total += m;
        }
        med.put("step", total);
        r.put("median_ms", med);
        r.put("loss", lastLoss);
        r.put("memory_plan_bytes", plan.total());
        r.put("peak_memory", Devices.peakMemory(dev));
        r.put("java", System.getProperty("java.version"));
        r.put("host_cpu", cpuModel());
        r.put("host_processors", Runtime.getRuntime().availableProcessors());
        String json = Json.write(r);
        System.out.println(json);
        if (out != null) {
            Files.createDirectories(out.toAbsolutePath().getParent());
            Files.writeString(out, json + "\n");
        }
        return 0;
    }

    private static String cpuModel() {
        try {
            for (String l : Files.readAllLines(Path.of("/proc/cpuinfo"))) if (l.startsWith("model name")) return l.substring(l.indexOf(':') + 1).trim();
        } catch (IOException | RuntimeException e) {
            // not Linux
        }
        return System.getProperty("os.arch");
    }

    /** Waits for the device (CUDA) and returns the time in ns. */
    private static long sync(Devices.Choice dev) {
        if (dev.cuda()) torch.cuda_synchronize();
        return System.nanoTime();
    }

    private static double[] round(double[] ms) {
        double[] r = new double[ms.length];
        for (int i = 0; i < ms.length; i++) r[i] = Math.round(ms[i] * 10) / 10.0;
        return r;
    }
}
