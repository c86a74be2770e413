package ai.aligndistil.tools;

import java.io.IOException;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import org.bytedeco.pytorch.global.torch.ScalarType;

import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import ai.aligndistil.model.CausalLM;
import ai.aligndistil.model.HfCheckpoint;
import ai.aligndistil.model.ModelConfig;
import ai.aligndistil.model.Tensors;

/**
 * Writes a Hugging Face model folder with a real model's configuration and random weights, for measuring
 * memory and time where the real weights cannot be downloaded.
 *
 * <pre>
 * java ... ai.aligndistil.tools.RandomCheckpoint --preset qwen2.5-0.5b|qwen2.5-1.5b --out DIR [--dtype bf16|f32] [--seed 0]
 * </pre>
 *
 * The presets carry the published hyper-parameters of Qwen2.5-0.5B-Instruct and Qwen2.5-1.5B-Instruct
 * (tied embeddings, q/k/v biases, rope_theta 1e6, RMSNorm eps 1e-6, vocabulary 151936). Weights are
 * N(0, 0.02²) (Qwen's initializer_range), norm weights 1 + N(0, 0.02²). Default file dtype: bf16, as published.
 */
@Command(name = "RandomCheckpoint", mixinStandardHelpOptions = true, sortOptions = false,
        description = "Writes a Hugging Face model folder with a real model's configuration and random weights.")
public final class RandomCheckpoint implements java.util.concurrent.Callable<Integer> {
    @Option(names = "--preset", required = true, paramLabel = "qwen2.5-0.5b|qwen2.5-1.5b", description = "The published configuration to copy.")
    String preset;
    @Option(names = "--out", required = true, paramLabel = "DIR", description = "Folder to write (config.json, model.safetensors).")
    Path out;
    @Option(names = "--dtype", defaultValue = "bf16", paramLabel = "bf16|f32", description = "File dtype (default: ${DEFAULT-VALUE}, as published).")
    String dtype;
    @Option(names = "--seed", defaultValue = "0", paramLabel = "N", description = "Seed of the random weights (default: ${DEFAULT-VALUE}).")
    long seed;

    /** The config.json of a preset ({@code qwen2.5-0.5b} or {@code qwen2.5-1.5b}). */
    public static Map<String, Object> preset(String name) {
        Map<String, Object> j = new LinkedHashMap<>();
        j.put("architectures", List.of("Qwen2ForCausalLM"));
        j.put("model_type", "qwen2");
        j.put("attention_dropout", 0.0);
        j.put("bos_token_id", 151643L);
        j.put("eos_token_id", 151645L);
        j.put("hidden_act", "silu");
        j.put("initializer_range", 0.02);
        j.put("max_position_embeddings", 32768L);
        j.put("rms_norm_eps", 1e-6);
        j.put("rope_scaling", null);
        j.put("rope_theta", 1000000.0);
        j.put("sliding_window", 32768L);
        j.put("tie_word_embeddings", true);
        j.put("use_cache", true);
        j.put("use_sliding_window", false);
        j.put("vocab_size", 151936L);
        switch (name) {
            case "qwen2.5-0.5b" -> {
                j.put("hidden_size", 896L);
                j.put("intermediate_size", 4864L);
                j.put("num_attention_heads", 14L);
                j.put("num_hidden_layers", 24L);
                j.put("num_key_value_heads", 2L);
                j.put("max_window_layers", 21L);
            }
            case "qwen2.5-1.5b" -> {
                j.put("hidden_size", 1536L);
                j.put("intermediate_size", 8960L);
                j.put("num_attention_heads", 12L);
                j.put("num_hidden_layers", 28L);
                j.put("num_key_value_heads", 2L);
                j.put("max_window_layers", 21L);
            }
            default -> throw new IllegalArgumentException("unknown preset '" + name + "' (qwen2.5-0.5b, qwen2.5-1.5b)");
        }
        return j;
    }

    /** Writes a random checkpoint of {@code config} in {@code fileDtype} to {@code dir}. */
    public static void write(ModelConfig config, Path dir, ScalarType fileDtype, long seed) throws IOException {
        CausalLM m = new CausalLM(config, fileDtype).initRandom(seed, 0.02);
        HfCheckpoint.save(m, dir, fileDtype);
    }

    public static void main(String[] args) {
        System.exit(new CommandLine(new RandomCheckpoint()).execute(args));
    }

    @Override
    public Integer call() throws IOException {
        ModelConfig c = ModelConfig.fromJson(preset(preset));
        long t0 = System.nanoTime();
        write(c, out, Tensors.parseDtype(dtype), seed);
        System.out.printf("%s: %,d parameters, %s, written to %s in %.1f s%n", preset, c.parameterCount(), dtype, out, (System.nanoTime() - t0) / 1e9);
        return 0;
    }
}
