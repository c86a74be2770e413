package ai.aligndistil.model;

import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;

/**
 * The memory a training run needs, computed from the model config alone (nothing loaded), so a run that cannot fit
 * stops before it starts (docs/model.md, "Memory plan"). All terms in bytes; P is the parameter count
 * ({@link ModelConfig#parameterCount()}), b the bytes of the model dtype (2 for bf16, 4 for f32), N the tokens of one
 * micro-batch (sequences x length), V the vocabulary, H the hidden size, L the layers, k the frozen models
 * (teachers or the DPO reference):
 * <ul>
 *   <li>{@code student_weights} P b; {@code master_weights} 4P when b = 2 (f32 master copy, AdamW); {@code gradients} P b;
 *       {@code optimizer} 8P (two f32 AdamW moments);</li>
 *   <li>{@code frozen_weights} k P b (teachers / reference in the model dtype, inference mode);</li>
 *   <li>{@code logits}: distillation without the fused-linear loss (2 + k) N V b (student logits, their gradient, the
 *       teachers' logits); with it (k + 1) C V b + 4VH (the chunk logits of the three heads in the model dtype, the
 *       student's overwritten by its gradient, C = the chunk, and the f32 head gradient); SFT/DPO (b + 12) N V (logits, their f32 log-softmax, its saved
 *       copy and gradient);</li>
 *   <li>{@code activations}, what autograd saves per layer and token: b (4H + 2Q + 2K + 4I) + 16H (Q = heads x
 *       head_dim, K = kv_heads x head_dim, I = intermediate; the f32 RMSNorm inputs 2 x 4H x 2), times L; plus on
 *       the CPU the attention probabilities of the math kernel, heads x T^2 x sequences x b per layer (CUDA's fused
 *       attention saves none). With activation checkpointing: the layer inputs L N H b plus one layer's activations
 *       (recomputed during the backward);</li>
 *   <li>{@code overhead}: 1.5 GiB on CUDA (context, cuBLAS workspace, allocator rounding), 0.5 GiB on the CPU (libtorch
 *       and the JVM's native memory).</li>
 * </ul>
 * An estimate by construction, meant to be on the safe side of what the allocator reports as peak allocated.
 */
public record MemoryPlan(Map<String, Long> parts) {
    /** What kind of loss a stage computes (what its logits cost). */
    public enum Kind { DISTILL, LOGPROB }

    public static final long GIB = 1L << 30;
    static final long CUDA_OVERHEAD = 3 * GIB / 2, CPU_OVERHEAD = GIB / 2;

    /**
     * @param c             the model config
     * @param dtypeBytes    2 (bf16) or 4 (f32)
     * @param sequences     sequences per micro-batch (DPO: chosen and rejected, so twice the pairs)
     * @param length        tokens per sequence (the padded length: --max-len at most)
     * @param frozen        frozen models held next to the student (distill: 1 or 2 teachers; dpo: the reference)
     * @param kind          the loss
     * @param checkpointing activation checkpointing per decoder layer
     * @param fusedChunk    0: no fused-linear loss; else the chunk of rows of the fused-linear loss
     * @param cuda          the device is a GPU
     */
    public static MemoryPlan of(ModelConfig c, int dtypeBytes, long sequences, long length, int frozen, Kind kind,
                                boolean checkpointing, long fusedChunk, boolean cuda) {
        if (dtypeBytes != 2 && dtypeBytes != 4) throw new IllegalArgumentException("dtype bytes must be 2 or 4, got " + dtypeBytes);
        long p = c.parameterCount(), b = dtypeBytes, n = sequences * length, v = c.vocabSize(), h = c.hiddenSize(), l = c.numLayers();
        long q = (long) c.numHeads() * c.headDim(), kv = (long) c.numKvHeads() * c.headDim(), inter = c.intermediateSize();
        Map<String, Long> m = new LinkedHashMap<>();
        m.put("student_weights", p * b);
        m.put("master_weights", b == 2 ? 4 * p : 0);
        m.put("gradients", p * b);
        m.put("optimizer", 8 * p);
        m.put("frozen_weights", frozen * p * b);
        long logits;
        if (kind == Kind.LOGPROB) logits = (b + 12) * n * v;
        else if (fusedChunk > 0) logits = (frozen + 1L) * Math.min(fusedChunk, n) * v * b + 4 * v * h;
        else logits = (2L + frozen) * n * v * b;
        m.put("logits", logits);
        long perLayer = n * (b * (4 * h + 2 * q + 2 * kv + 4 * inter) + 16 * h);
        if (!cuda) perLayer += (long) c.numHeads() * length * length * sequences * b;
        m.put("activations", checkpointing ? l * n * h * b + perLayer : l * perLayer);
        m.put("overhead", cuda ? CUDA_OVERHEAD : CPU_OVERHEAD);
        return new MemoryPlan(java.util.Collections.unmodifiableMap(m));
    }

    /**
     * The plan plus on-policy rollouts ({@code rollout}): the KV cache of {@code sequences} sampled together, each up
     * to {@code length} tokens (prompt + response), 2 L K length b per sequence (K = kv_heads x head_dim), and the
     * sampler's f32 probabilities and f64 running sums of one position, 12 V per sequence. The cache lives until the
     * optimiser step ends, so it adds to the training terms.
     */
    public MemoryPlan withRollout(ModelConfig c, int dtypeBytes, long sequences, long length) {
        Map<String, Long> m = new LinkedHashMap<>(parts);
        long kv = (long) c.numKvHeads() * c.headDim();
        m.put("rollout", 2L * c.numLayers() * kv * length * dtypeBytes * sequences + 12L * c.vocabSize() * sequences);
        return new MemoryPlan(java.util.Collections.unmodifiableMap(m));
    }

    public long total() {
        long t = 0;
        for (long x : parts.values()) t += x;
        return t;
    }

    /** One line: the total and every part in GiB. */
    public String describe() {
        StringBuilder s = new StringBuilder(String.format(Locale.ROOT, "%.2f GiB (", total() / (double) GIB));
        boolean first = true;
        for (var e : parts.entrySet()) {
            if (e.getValue() == 0) continue;
            if (!first) s.append(", ");
            s.append(e.getKey()).append(' ').append(String.format(Locale.ROOT, "%.2f", e.getValue() / (double) GIB));
            first = false;
        }
        return s.append(')').toString();
    }

    /** The capacity override (bytes) of the startup check, for tests and for hosts whose free memory misleads. */
    public static final String CAPACITY_PROPERTY = "aligndistil.memory.capacity";

    /** MemAvailable of /proc/meminfo in bytes, or -1 where it cannot be read. */
    public static long hostAvailable() {
        try {
            for (String line : java.nio.file.Files.readAllLines(java.nio.file.Path.of("/proc/meminfo"))) {
                if (line.startsWith("MemAvailable:")) return Long.parseLong(line.replaceAll("[^0-9]", "")) * 1024;
            }
        } catch (java.io.IOException | RuntimeException e) {
            // not Linux: no check
        }
        return -1;
    }

    /** The plan of the docs' table: {@code qwen2.5-0.5b} / {@code qwen2.5-1.5b} shapes, printed as Markdown rows. */
    public static void main(String[] args) {
        System.out.println("| model | dtype | tokens | checkpointing | fused-linear | student+master+grad+AdamW | 2 teachers | logits | activations | total |");
        System.out.println("|---|---|---:|---|---|---:|---:|---:|---:|---:|");
        for (String[] mc : new String[][] {{"Qwen2.5-0.5B", "896", "4864", "14", "24"}, {"Qwen2.5-1.5B", "1536", "8960", "12", "28"}}) {
            int hidden = Integer.parseInt(mc[1]), heads = Integer.parseInt(mc[3]);
            ModelConfig c = new ModelConfig("Qwen2ForCausalLM", 151936, hidden, Integer.parseInt(mc[2]), Integer.parseInt(mc[4]), heads, 2,
                    hidden / heads, 1e-6, 1e6, true, true, false, 32768, "bfloat16", Map.of());
            for (boolean ck : new boolean[] {false, true}) for (long fl : new long[] {0, 1024}) {
                MemoryPlan pl = of(c, 2, 1, 2048, 2, Kind.DISTILL, ck, fl, true);
                var x = pl.parts();
                System.out.printf(Locale.ROOT, "| %s | bf16 | 2048 | %s | %s | %.2f | %.2f | %.2f | %.2f | **%.2f** |%n", mc[0], ck ? "yes" : "no",
                        fl > 0 ? "yes (C = 1024)" : "no",
                        (x.get("student_weights") + x.get("master_weights") + x.get("gradients") + x.get("optimizer")) / (double) GIB,
                        x.get("frozen_weights") / (double) GIB, x.get("logits") / (double) GIB, x.get("activations") / (double) GIB, pl.total() / (double) GIB);
            }
        }
    }
}
