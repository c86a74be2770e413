package ai.aligndistil.model;

import java.io.IOException;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import org.bytedeco.pytorch.global.torch.ScalarType;

/** Tiny configurations and checkpoints for tests. */
public final class TinyModels {
    private TinyModels() {}

    /** config.json of a Qwen2-style model: hidden 64, 4 heads, 2 kv heads (GQA), qkv bias, tied head. */
    public static Map<String, Object> qwen2Json(int vocab, int layers) {
        Map<String, Object> j = new LinkedHashMap<>();
        j.put("architectures", List.of("Qwen2ForCausalLM"));
        j.put("model_type", "qwen2");
        j.put("vocab_size", (long) vocab);
        j.put("hidden_size", 64L);
        j.put("intermediate_size", 96L);
        j.put("num_hidden_layers", (long) layers);
        j.put("num_attention_heads", 4L);
        j.put("num_key_value_heads", 2L);
        j.put("rms_norm_eps", 1e-6);
        j.put("rope_theta", 10000.0);
        j.put("tie_word_embeddings", true);
        j.put("hidden_act", "silu");
        j.put("max_position_embeddings", 512L);
        j.put("torch_dtype", "float32");
        j.put("bos_token_id", 1L);
        j.put("eos_token_id", 2L);
        return j;
    }

    /** config.json of a Llama-style model: no biases, untied head, 4 heads / 1 kv head. */
    public static Map<String, Object> llamaJson(int vocab, int layers) {
        Map<String, Object> j = new LinkedHashMap<>();
        j.put("architectures", List.of("LlamaForCausalLM"));
        j.put("model_type", "llama");
        j.put("vocab_size", (long) vocab);
        j.put("hidden_size", 64L);
        j.put("intermediate_size", 128L);
        j.put("num_hidden_layers", (long) layers);
        j.put("num_attention_heads", 4L);
        j.put("num_key_value_heads", 1L);
        j.put("rms_norm_eps", 1e-5);
        j.put("rope_theta", 500000.0);
        j.put("tie_word_embeddings", false);
        j.put("attention_bias", false);
        j.put("hidden_act", "silu");
        j.put("max_position_embeddings", 512L);
        j.put("torch_dtype", "float32");
        return j;
    }

    public static ModelConfig qwen2(int vocab, int layers) { return ModelConfig.fromJson(qwen2Json(vocab, layers)); }

    public static ModelConfig llama(int vocab, int layers) { return ModelConfig.fromJson(llamaJson(vocab, layers)); }

    public static CausalLM random(ModelConfig c, long seed, ScalarType dtype) {
        return new CausalLM(c, dtype).initRandom(seed, 0.1);
    }

    /** Words of the test tokenizer's vocabulary (ids 4.., after the 3 special tokens and [UNK]). */
    public static final String[] WORDS = {"system", "user", "assistant", "You", "are", "Qwen,", "created", "by", "Alibaba", "Cloud.",
            "a", "helpful", "assistant.", "What", "is", "the", "capital", "of", "France?", "Paris.", "hello", "world", "It"};

    /**
     * Writes a small WordLevel tokenizer.json (whitespace pre-tokenizer) with the special tokens
     * {@code <|endoftext|>}=0, {@code <|im_start|>}=1, {@code <|im_end|>}=2, [UNK]=3 and {@link #WORDS}.
     */
    public static Path writeTokenizer(Path dir) throws IOException {
        StringBuilder vocab = new StringBuilder("{\"<|endoftext|>\":0,\"<|im_start|>\":1,\"<|im_end|>\":2,\"[UNK]\":3");
        for (int i = 0; i < WORDS.length; i++) vocab.append(",\"").append(WORDS[i]).append("\":").append(i + 4);
        vocab.append('}');
        String special = "\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"normalized\":false,\"special\":true";
        String json = "{\"version\":\"1.0\",\"truncation\":null,\"padding\":null,\"added_tokens\":["
                + "{\"id\":0,\"content\":\"<|endoftext|>\"," + special + "},"
                + "{\"id\":1,\"content\":\"<|im_start|>\"," + special + "},"
                + "{\"id\":2,\"content\":\"<|im_end|>\"," + special + "}],"
                + "\"normalizer\":null,\"pre_tokenizer\":{\"type\":\"WhitespaceSplit\"},\"post_processor\":null,"
                + "\"decoder\":null,\"model\":{\"type\":\"WordLevel\",\"vocab\":" + vocab + ",\"unk_token\":\"[UNK]\"}}";
        java.nio.file.Files.createDirectories(dir);
        Path f = dir.resolve("tokenizer.json");
        java.nio.file.Files.writeString(f, json);
        return f;
    }

    /** Writes a random tiny checkpoint folder and returns it. */
    public static Path write(Path dir, ModelConfig c, long seed) throws IOException {
        HfCheckpoint.save(random(c, seed, ScalarType.Float), dir);
        return dir;
    }
}
