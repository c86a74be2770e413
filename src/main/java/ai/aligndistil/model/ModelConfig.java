package ai.aligndistil.model;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import ai.aligndistil.io.Json;

/**
 * The hyper-parameters of a Qwen2- or Llama-architecture causal LM, parsed and validated from a Hugging Face
 * {@code config.json}.
 *
 * @param architecture   {@code Qwen2ForCausalLM} or {@code LlamaForCausalLM}
 * @param vocabSize      rows of the embedding and of the LM head (may exceed the tokenizer's size: padded vocabulary)
 * @param hiddenSize     model width D
 * @param intermediateSize width of the SwiGLU MLP
 * @param numLayers      decoder layers
 * @param numHeads       query heads H
 * @param numKvHeads     key/value heads (grouped-query attention; H must be a multiple)
 * @param headDim        per-head width (config {@code head_dim}, default D/H)
 * @param rmsNormEps     epsilon of every RMSNorm
 * @param ropeTheta      RoPE base
 * @param tieWordEmbeddings LM head shares the embedding matrix
 * @param attentionBias  q/k/v projections have biases (always for Qwen2; {@code attention_bias} for Llama)
 * @param outputBias     o_proj has a bias (Llama with {@code attention_bias}; never Qwen2)
 * @param maxPositionEmbeddings informational; generation may not exceed it
 * @param torchDtype     the checkpoint's declared dtype ({@code float32}, {@code bfloat16}, ...), may be null
 * @param raw            the whole config.json, kept so a save writes back keys this class does not model
 */
public record ModelConfig(String architecture, int vocabSize, int hiddenSize, int intermediateSize, int numLayers,
                          int numHeads, int numKvHeads, int headDim, double rmsNormEps, double ropeTheta,
                          boolean tieWordEmbeddings, boolean attentionBias, boolean outputBias,
                          int maxPositionEmbeddings, String torchDtype, Map<String, Object> raw) {

    /** Architectures this model implements, with their {@code model_type}. */
    public static final Map<String, String> SUPPORTED = Map.of("Qwen2ForCausalLM", "qwen2", "LlamaForCausalLM", "llama");

    /** A config.json that is unreadable, inconsistent, or describes an unsupported model. */
    public static final class ConfigException extends IllegalArgumentException {
        private static final long serialVersionUID = 1L;
        public ConfigException(String message) { super(message); }
    }

    public ModelConfig {
        if (!SUPPORTED.containsKey(architecture))
            throw new ConfigException("unsupported architecture '" + architecture + "' (supported: " + SUPPORTED.keySet() + ")");
        positive("vocab_size", vocabSize);
        positive("hidden_size", hiddenSize);
        positive("intermediate_size", intermediateSize);
        positive("num_hidden_layers", numLayers);
        positive("num_attention_heads", numHeads);
        positive("num_key_value_heads", numKvHeads);
        positive("head_dim", headDim);
        if (numHeads % numKvHeads != 0)
            throw new ConfigException("num_attention_heads=" + numHeads + " is not a multiple of num_key_value_heads=" + numKvHeads);
        if (headDim % 2 != 0) throw new ConfigException("head_dim=" + headDim + " must be even for rotary embeddings");
        if (!(rmsNormEps > 0) || !(ropeTheta > 0)) throw new ConfigException("rms_norm_eps and rope_theta must be positive");
        raw = raw == null ? Map.of() : raw;
    }

    private static void positive(String key, int v) {
        if (v <= 0) throw new ConfigException(key + " must be positive, got " + v);
    }

    /** Query heads per key/value head. */
    public int groupSize() { return numHeads / numKvHeads; }

    /** Model type string of config.json ({@code qwen2} or {@code llama}). */
    public String modelType() { return SUPPORTED.get(architecture); }

    /** Reads and validates {@code dir/config.json}. */
    public static ModelConfig read(Path dir) throws IOException {
        Path f = dir.resolve("config.json");
        if (!Files.isRegularFile(f)) throw new ConfigException(f + ": no config.json in the model folder");
        try {
            return fromJson(Json.parseObject(Files.readString(f)));
        } catch (Json.JsonException e) {
            throw new ConfigException(f + ": not valid JSON: " + e.getMessage());
        } catch (ConfigException e) {
            throw new ConfigException(f + ": " + e.getMessage());
        }
    }

    /** Builds a config from a parsed config.json. */
    public static ModelConfig fromJson(Map<String, Object> j) {
        String arch = null;
        if (j.get("architectures") instanceof List<?> l && !l.isEmpty() && l.get(0) instanceof String s) arch = s;
        String type = j.get("model_type") instanceof String s ? s : null;
        if (arch == null && type != null) {
            for (var e : SUPPORTED.entrySet()) if (e.getValue().equals(type)) arch = e.getKey();
        }
        if (arch == null) throw new ConfigException("config names no architecture (architectures / model_type)");
        if (!SUPPORTED.containsKey(arch)) throw new ConfigException("unsupported architecture '" + arch + "' (supported: " + SUPPORTED.keySet() + ")");
        if (type != null && !type.equals(SUPPORTED.get(arch)))
            throw new ConfigException("model_type '" + type + "' does not match architecture " + arch);
        Object act = j.get("hidden_act");
        if (act != null && !"silu".equals(act)) throw new ConfigException("hidden_act '" + act + "' is not supported (only silu)");
        if (j.get("rope_scaling") != null) throw new ConfigException("rope_scaling " + Json.write(j.get("rope_scaling")) + " is not supported");
        if (Boolean.TRUE.equals(j.get("use_sliding_window"))) throw new ConfigException("use_sliding_window=true is not supported");
        if (Boolean.TRUE.equals(j.get("mlp_bias"))) throw new ConfigException("mlp_bias=true is not supported");
        int hidden = intKey(j, "hidden_size", null);
        int heads = intKey(j, "num_attention_heads", null);
        int kv = intKey(j, "num_key_value_heads", heads);
        int headDim = j.get("head_dim") == null ? (heads > 0 && hidden % heads == 0 ? hidden / heads : -1) : intKey(j, "head_dim", null);
        if (headDim <= 0) throw new ConfigException("hidden_size=" + hidden + " is not divisible by num_attention_heads=" + heads);
        boolean qwen = arch.equals("Qwen2ForCausalLM");
        boolean llamaBias = !qwen && Boolean.TRUE.equals(j.get("attention_bias"));
        return new ModelConfig(arch,
                intKey(j, "vocab_size", null), hidden, intKey(j, "intermediate_size", null),
                intKey(j, "num_hidden_layers", null), heads, kv, headDim,
                doubleKey(j, "rms_norm_eps", 1e-6), doubleKey(j, "rope_theta", 10000.0),
                boolKey(j, "tie_word_embeddings", false),
                qwen || llamaBias, llamaBias,
                intKey(j, "max_position_embeddings", 32768),
                j.get("torch_dtype") instanceof String s ? s : (j.get("dtype") instanceof String s2 ? s2 : null),
                new LinkedHashMap<>(j));
    }

    private static int intKey(Map<String, Object> j, String k, Integer dflt) {
        Object v = j.get(k);
        if (v == null) {
            if (dflt == null) throw new ConfigException("missing key '" + k + "'");
            return dflt;
        }
        if (!(v instanceof Long l) || l > Integer.MAX_VALUE || l < Integer.MIN_VALUE)
            throw new ConfigException("key '" + k + "' must be an integer, got " + Json.write(v));
        return (int) (long) l;
    }

    private static double doubleKey(Map<String, Object> j, String k, double dflt) {
        Object v = j.get(k);
        if (v == null) return dflt;
        if (!(v instanceof Number n)) throw new ConfigException("key '" + k + "' must be a number, got " + Json.write(v));
        return n.doubleValue();
    }

    private static boolean boolKey(Map<String, Object> j, String k, boolean dflt) {
        Object v = j.get(k);
        if (v == null) return dflt;
        if (!(v instanceof Boolean b)) throw new ConfigException("key '" + k + "' must be true or false, got " + Json.write(v));
        return b;
    }

    /**
     * The config.json to write for this model: the original keys (if any) with this record's values written
     * over them, so Hugging Face transformers loads the folder.
     *
     * @param dtype the {@code torch_dtype} of the weights being saved
     */
    public Map<String, Object> toJson(String dtype) {
        Map<String, Object> j = new LinkedHashMap<>(raw);
        j.put("architectures", List.of(architecture));
        j.put("model_type", modelType());
        j.put("vocab_size", (long) vocabSize);
        j.put("hidden_size", (long) hiddenSize);
        j.put("intermediate_size", (long) intermediateSize);
        j.put("num_hidden_layers", (long) numLayers);
        j.put("num_attention_heads", (long) numHeads);
        j.put("num_key_value_heads", (long) numKvHeads);
        if (headDim != hiddenSize / numHeads || j.containsKey("head_dim")) j.put("head_dim", (long) headDim);
        j.put("rms_norm_eps", rmsNormEps);
        j.put("rope_theta", ropeTheta);
        j.put("tie_word_embeddings", tieWordEmbeddings);
        j.put("hidden_act", "silu");
        j.put("max_position_embeddings", (long) maxPositionEmbeddings);
        if (!architecture.equals("Qwen2ForCausalLM")) j.put("attention_bias", attentionBias);
        j.putIfAbsent("rope_scaling", null);
        j.put("torch_dtype", dtype);
        return j;
    }

    /** A copy of this config with a different declared dtype. */
    public ModelConfig withTorchDtype(String dtype) {
        return new ModelConfig(architecture, vocabSize, hiddenSize, intermediateSize, numLayers, numHeads, numKvHeads, headDim,
                rmsNormEps, ropeTheta, tieWordEmbeddings, attentionBias, outputBias, maxPositionEmbeddings, dtype, raw);
    }

    /**
     * The Hugging Face tensor names and shapes a checkpoint of this config holds, in a stable order
     * (embedding, layers, final norm, untied head). Lives here rather than in {@link CausalLM} so checkpoint
     * validation does not initialise libtorch classes (see {@link TorchRuntime} on {@code maxPhysicalBytes}).
     */
    public Map<String, long[]> parameterShapes() {
        Map<String, long[]> m = new LinkedHashMap<>();
        ModelConfig c = this;
        long d = c.hiddenSize(), q = (long) c.numHeads() * c.headDim(), kv = (long) c.numKvHeads() * c.headDim(), f = c.intermediateSize();
        m.put("model.embed_tokens.weight", new long[] {c.vocabSize(), d});
        for (int i = 0; i < c.numLayers(); i++) {
            String p = "model.layers." + i + ".";
            m.put(p + "input_layernorm.weight", new long[] {d});
            m.put(p + "self_attn.q_proj.weight", new long[] {q, d});
            if (c.attentionBias()) m.put(p + "self_attn.q_proj.bias", new long[] {q});
            m.put(p + "self_attn.k_proj.weight", new long[] {kv, d});
            if (c.attentionBias()) m.put(p + "self_attn.k_proj.bias", new long[] {kv});
            m.put(p + "self_attn.v_proj.weight", new long[] {kv, d});
            if (c.attentionBias()) m.put(p + "self_attn.v_proj.bias", new long[] {kv});
            m.put(p + "self_attn.o_proj.weight", new long[] {d, q});
            if (c.outputBias()) m.put(p + "self_attn.o_proj.bias", new long[] {d});
            m.put(p + "post_attention_layernorm.weight", new long[] {d});
            m.put(p + "mlp.gate_proj.weight", new long[] {f, d});
            m.put(p + "mlp.up_proj.weight", new long[] {f, d});
            m.put(p + "mlp.down_proj.weight", new long[] {d, f});
        }
        m.put("model.norm.weight", new long[] {d});
        if (!c.tieWordEmbeddings()) m.put("lm_head.weight", new long[] {c.vocabSize(), d});
        return m;
    }

    /** Number of parameters (tied head counted once). */
    public long parameterCount() {
        long d = hiddenSize, q = (long) numHeads * headDim, kvw = (long) numKvHeads * headDim;
        long attn = d * q + 2 * d * kvw + q * d + (attentionBias ? q + 2 * kvw : 0) + (outputBias ? d : 0);
        long mlp = 3 * d * intermediateSize;
        long layer = attn + mlp + 2 * d;
        long emb = (long) vocabSize * d;
        return emb + (tieWordEmbeddings ? 0 : emb) + numLayers * layer + d;
    }
}
