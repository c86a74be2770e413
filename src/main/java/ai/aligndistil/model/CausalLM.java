package ai.aligndistil.model;

import static ai.aligndistil.model.Tensors.scalar;

import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Device;
import org.bytedeco.pytorch.DeviceOptional;
import org.bytedeco.pytorch.BoolOptional;
import org.bytedeco.pytorch.DoubleOptional;
import org.bytedeco.pytorch.GradMode;
import org.bytedeco.pytorch.GeneratorOptional;
import org.bytedeco.pytorch.InferenceMode;
import org.bytedeco.pytorch.Module;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.ScalarTypeOptional;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorArrayRefOptional;
import org.bytedeco.pytorch.TensorOptional;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * A decoder-only transformer with the numerics of Hugging Face's {@code Qwen2ForCausalLM} and
 * {@code LlamaForCausalLM}: token embedding, pre-norm layers of grouped-query attention (rotary position
 * embeddings, rotate-half convention) and a SwiGLU MLP, a final RMSNorm and a tied or untied LM head.
 *
 * <p><b>Numerics.</b> RMSNorm is computed in float32 and cast back to the model dtype before the weight
 * multiply, as Hugging Face does; RoPE angles are computed in float32 from position ids
 * {@code cumsum(mask) - 1}, so left padding is harmless; attention goes through
 * {@code scaled_dot_product_attention} with a causal and padding mask (padded query rows attend to
 * themselves only, so they never produce NaN). Supported dtypes: float32 and bfloat16.
 *
 * <p><b>Parameters</b> are owned tensors, named and shaped as in Hugging Face checkpoints
 * ({@link #namedParameters()}); they are also registered on this {@link Module} (dots replaced by
 * underscores, since libtorch forbids dots in parameter names) so {@link #parameters()} works. Create the
 * model outside any {@code PointerScope}; call {@link #forward} inside one per step.
 *
 * <p><b>Logits</b> come back as a contiguous [B, T, V] tensor in the model dtype; a caller may read it
 * through {@code data_ptr().address()}, compute a gradient elsewhere and call
 * {@code logits.backward(grad, ...)}.
 */
@SuppressWarnings("try")
public final class CausalLM extends Module {
    private final ModelConfig config;
    private final ScalarType dtype;
    private final Map<String, Tensor> params = new LinkedHashMap<>();
    private final Tensor embed;
    private final Tensor finalNorm;
    private final Tensor lmHead;
    private final Layer[] layers;
    /** RoPE inverse frequencies, float32 [headDim / 2], on the model's device. */
    private Tensor invFreq;
    /** Where the parameters live ({@link #to(Devices.Choice)}); inputs are moved there by the forward passes. */
    private Devices.Choice device = Devices.Choice.CPU;
    private Device torchDevice;
    private boolean frozen;
    private boolean checkpointing;
    /** The kept inputs of the last checkpointed training forward, until {@link #finishBackward()}. */
    private Checkpoints pending;
    /** The file mapping the weights point into (zero-copy loads), or null when the model owns its weights. */
    private final AutoCloseable backing;

    private record Layer(Tensor inNorm, Tensor q, Tensor qb, Tensor k, Tensor kb, Tensor v, Tensor vb, Tensor o, Tensor ob,
                         Tensor postNorm, Tensor gate, Tensor up, Tensor down) {}

    /**
     * Allocates an (uninitialised) model; fill it with {@link HfCheckpoint#load} or {@link #initRandom}.
     *
     * @param dtype {@code ScalarType.Float} or {@code ScalarType.BFloat16}; {@code ScalarType.Double} also works
     *              (norms then run in float64), meant for gradient checks
     */
    public CausalLM(ModelConfig config, ScalarType dtype) {
        this(config, dtype, null, null);
    }

    /**
     * A model over existing weight tensors (by Hugging Face name, all of {@code dtype}), used by
     * {@link HfCheckpoint#loadMapped}: the model is frozen and keeps {@code backing} (the file mapping the
     * tensors point into) reachable for its whole life.
     */
    CausalLM(ModelConfig config, ScalarType dtype, Map<String, Tensor> weights, AutoCloseable backing) {
        super(config.architecture());
        TorchRuntime.init();
        if (dtype.value != ScalarType.Float.value && dtype.value != ScalarType.BFloat16.value && dtype.value != ScalarType.Double.value)
            throw new IllegalArgumentException("model dtype must be float32 or bfloat16 (or float64 for gradient checks), got " + dtype);
        this.config = config;
        this.dtype = dtype;
        Map<String, long[]> shapes = config.parameterShapes();
        for (Map.Entry<String, long[]> e : shapes.entrySet()) {
            Tensor t = weights == null ? Tensors.empty(dtype, e.getValue()) : weights.get(e.getKey());
            if (t == null) throw new IllegalArgumentException("no tensor for " + e.getKey());
            // Keep our own handle: register_parameter's return value dangles (libtorch-presets.md, gotcha 1).
            register_parameter(e.getKey().replace('.', '_'), t, weights == null);
            params.put(e.getKey(), t);
        }
        this.backing = backing;
        this.frozen = weights != null;
        embed = params.get("model.embed_tokens.weight");
        finalNorm = params.get("model.norm.weight");
        lmHead = config.tieWordEmbeddings() ? embed : params.get("lm_head.weight");
        layers = new Layer[config.numLayers()];
        for (int i = 0; i < layers.length; i++) {
            String p = "model.layers." + i + ".";
            layers[i] = new Layer(params.get(p + "input_layernorm.weight"),
                    params.get(p + "self_attn.q_proj.weight"), params.get(p + "self_attn.q_proj.bias"),
                    params.get(p + "self_attn.k_proj.weight"), params.get(p + "self_attn.k_proj.bias"),
                    params.get(p + "self_attn.v_proj.weight"), params.get(p + "self_attn.v_proj.bias"),
                    params.get(p + "self_attn.o_proj.weight"), params.get(p + "self_attn.o_proj.bias"),
                    params.get(p + "post_attention_layernorm.weight"),
                    params.get(p + "mlp.gate_proj.weight"), params.get(p + "mlp.up_proj.weight"), params.get(p + "mlp.down_proj.weight"));
        }
        int half = config.headDim() / 2;
        float[] inv = new float[half];
        for (int i = 0; i < half; i++) {
            // As Hugging Face: 1 / theta^(2i / d), exponent and power in float32.
            float exponent = (float) (2 * i) / (float) config.headDim();
            inv[i] = 1.0f / (float) Math.pow(config.ropeTheta(), exponent);
        }
        invFreq = Tensors.fromFloats(inv, half);
    }

    /** The Hugging Face tensor names and shapes of a config; see {@link ModelConfig#parameterShapes()}. */
    public static Map<String, long[]> parameterShapes(ModelConfig c) {
        return c.parameterShapes();
    }

    public ModelConfig config() { return config; }

    /** The parameter dtype (float32 or bfloat16). */
    public ScalarType dtype() { return dtype; }

    /** The device the parameters live on. */
    public Devices.Choice device() { return device; }

    /**
     * Moves every parameter (and the RoPE table) to {@code target}, in place: the parameter tensors keep their
     * identity ({@code Module.to} sets their data), so {@link #namedParameters()} and an optimiser built later see
     * the moved tensors. A no-op for the device the model is on. Call it outside any {@code PointerScope}.
     */
    public CausalLM to(Devices.Choice target) {
        if (target.equals(device)) return this;
        Device d = target.torch();
        to(d, false);
        Tensor f = invFreq.to(d, ScalarType.Float);
        f.retainReference();
        invFreq = f;
        device = target;
        torchDevice = d;
        return this;
    }

    /** Tensor options of {@code dt} on the model's device. */
    TensorOptions options(ScalarType dt) {
        TensorOptions o = new TensorOptions(dt);
        return torchDevice == null ? o : o.device(new DeviceOptional(torchDevice));
    }

    /** {@code t} on the model's device (itself when it is there already; ids and masks are built on the host). */
    public Tensor onDevice(Tensor t) {
        if (t == null || torchDevice == null || t.is_cuda() == device.cuda()) return t;
        return t.to(torchDevice, t.scalar_type());
    }

    /** Parameters by Hugging Face name (the tied head is not listed separately). Do not close these. */
    public Map<String, Tensor> namedParameters() { return Collections.unmodifiableMap(params); }

    /** Parameters as a vector, in {@link #namedParameters()} order. */
    public TensorVector parameterVector() {
        TensorVector v = new TensorVector();
        for (Tensor t : params.values()) v.push_back(t);
        return v;
    }

    /**
     * Fills every parameter with random values (deterministic for a seed): matrices N(0, std²), biases
     * N(0, std²), norm weights 1 + N(0, std²) so tests exercise them. Used by tests and
     * {@code ai.aligndistil.tools.RandomCheckpoint}.
     */
    public CausalLM initRandom(long seed, double std) {
        if (backing != null) throw new IllegalStateException("the weights of a memory-mapped model are read-only");
        // libtorch's default generator is process-wide: seeding and drawing hold one lock, so models initialised on
        // several threads at once (the demo's seeds) each get exactly the values of their seed.
        synchronized (CausalLM.class) {
            torch.manual_seed(seed);
            try (NoGradGuard g = new NoGradGuard()) {
                for (Map.Entry<String, Tensor> e : params.entrySet()) {
                    Tensor t = e.getValue();
                    t.normal_(0.0, std, new GeneratorOptional());
                    if (e.getKey().endsWith("norm.weight")) t.add_(scalar(1.0));
                }
            }
        }
        return this;
    }

    /** Turns gradient tracking off for every parameter (a frozen reference model); see {@link #isFrozen()}. */
    public CausalLM freeze() {
        for (Tensor t : params.values()) t.requires_grad_(false);
        frozen = true;
        return this;
    }

    public boolean isFrozen() { return frozen; }

    /**
     * Whether the weights point into a read-only file mapping ({@link HfCheckpoint#loadMapped}); such a model
     * must never be written to (no optimizer, no {@link #initRandom}).
     */
    public boolean isMapped() { return backing != null; }

    /** Sets every parameter's gradient to undefined (cheaper than zeroing). */
    public void zeroGrad() {
        zero_grad(true);
    }

    /**
     * Logits of a frozen reference model: {@link #forward(Tensor, Tensor)} under {@code InferenceMode}, so no
     * autograd graph is recorded. The result is an inference tensor: read it or hand it to a kernel; it cannot
     * take part in a later backward.
     */
    public Tensor forwardInference(Tensor ids, Tensor attentionMask) {
        try (InferenceMode im = new InferenceMode()) {
            return forward(ids, attentionMask, null);
        }
    }

    /** Logits [B, T, V] of a batch without padding (a causal mask only). */
    public Tensor forward(Tensor ids) { return forward(ids, null, null); }

    /**
     * Logits [B, T, V] of a batch.
     *
     * @param ids           int64 [B, T] token ids
     * @param attentionMask int64 or bool [B, T], 1 for real tokens and 0 for padding (left padding expected),
     *                      or null for none
     */
    public Tensor forward(Tensor ids, Tensor attentionMask) { return forward(ids, attentionMask, null); }

    /**
     * Logits [B, T, V] of the next {@code T} tokens of every row, reading and extending a key/value cache.
     * With {@code cache == null} this is a plain forward pass. The cache's mask accumulates
     * {@code attentionMask} (all ones when null) so position ids and padding carry over across calls.
     */
    public Tensor forward(Tensor ids, Tensor attentionMask, KvCache cache) {
        Tensor logits = torch.linear(forwardHidden(ids, attentionMask, cache), lmHead);
        return logits;
    }

    /**
     * The final hidden states [B, T, H] (after the final RMSNorm, before the LM head) of a batch without a
     * cache: {@code forward(ids, mask)} is {@code linear(forwardHidden(ids, mask), headWeight())}. Used by the
     * fused-linear loss ({@link ChunkedFusedLinearLoss}), which applies the head chunk by chunk.
     */
    public Tensor forwardHidden(Tensor ids, Tensor attentionMask) { return forwardHidden(ids, attentionMask, null); }

    /** {@link #forwardHidden(Tensor, Tensor)} under {@code InferenceMode} (frozen teachers). */
    public Tensor forwardHiddenInference(Tensor ids, Tensor attentionMask) {
        try (InferenceMode im = new InferenceMode()) {
            return forwardHidden(ids, attentionMask, null);
        }
    }

    /**
     * The LM head weight [V, H]: {@code lm_head.weight}, or {@code model.embed_tokens.weight} itself when the
     * embeddings are tied (the same tensor, so a gradient added to its {@code grad()} lands in the embedding).
     */
    public Tensor headWeight() { return lmHead; }

    /** The Hugging Face name of the parameter {@link #headWeight()} is. */
    public String headParameterName() { return config.tieWordEmbeddings() ? "model.embed_tokens.weight" : "lm_head.weight"; }

    private Tensor forwardHidden(Tensor ids, Tensor attentionMask, KvCache cache) {
        if (ids.dim() != 2) throw new IllegalArgumentException("ids must be [B, T], got " + ids.dim() + " dims");
        long b = ids.size(0), t = ids.size(1);
        long past = cache == null ? 0 : cache.length();
        ids = onDevice(ids);
        Tensor mask = attentionMask == null ? null : onDevice(attentionMask).to(ScalarType.Long);
        Tensor fullMask;
        if (cache != null) {
            if (cache.batch() != b) throw new IllegalArgumentException("cache batch " + cache.batch() + " != ids batch " + b);
            fullMask = cache.appendMask(mask == null ? torch.ones(new long[] {b, t}, options(ScalarType.Long)) : mask);
        } else {
            fullMask = mask;
        }

        // Position ids: cumsum(mask) - 1, padding set to 1 (as Hugging Face), or 0..T-1 without a mask.
        Tensor pos;
        if (fullMask == null) {
            pos = torch.arange(scalar(0), scalar(t), options(ScalarType.Long)).unsqueeze(0).expand(b, t);
        } else {
            pos = fullMask.cumsum(1).sub(scalar(1)).masked_fill(fullMask.eq(scalar(0)), scalar(1)).narrow(1, past, t);
        }
        Tensor freqs = pos.to(ScalarType.Float).unsqueeze(-1).mul(invFreq);           // [B, T, hd/2]
        Tensor angles = torch.cat(new TensorVector(freqs, freqs), -1);                 // [B, T, hd]
        Tensor cos = angles.cos().to(dtype).unsqueeze(1);                             // [B, 1, T, hd]
        Tensor sin = angles.sin().to(dtype).unsqueeze(1);

        // Attention mask [B, 1, T, past+T] (true = may attend), or the fast causal flag when nothing is padded.
        Tensor attnMask = null;
        if (fullMask != null) {
            long s = past + t;
            Tensor kIdx = torch.arange(scalar(0), scalar(s), options(ScalarType.Long)).unsqueeze(0);       // [1, S]
            Tensor qIdx = torch.arange(scalar(past), scalar(s), options(ScalarType.Long)).unsqueeze(1);    // [T, 1]
            Tensor causal = kIdx.le(qIdx);                                                                           // [T, S]
            Tensor keyOk = fullMask.ne(scalar(0)).unsqueeze(1).unsqueeze(1);                                         // [B, 1, 1, S]
            Tensor self = kIdx.eq(qIdx);                                                                             // [T, S]
            attnMask = causal.unsqueeze(0).unsqueeze(0).logical_and(keyOk).logical_or(self);                         // [B, 1, T, S]
        }

        Tensor x = torch.embedding(embed, ids);
        if (checkpointing && !frozen && cache == null && GradMode.is_enabled()) {
            // Activation checkpointing: the layers run without a graph, keeping only each layer's input; the graph
            // starts again at the last layer's output (a leaf), and finishBackward() recomputes layer by layer.
            Tensor[] inputs = new Tensor[layers.length];
            Tensor cur = x.detach();
            try (NoGradGuard g = new NoGradGuard()) {
                for (int l = 0; l < layers.length; l++) {
                    inputs[l] = cur;
                    cur = layerInOwnScope(l, cur, cos, sin, attnMask, null, 0);
                }
            }
            Tensor last = cur.detach().requires_grad_(true);
            pending = new Checkpoints(x, inputs, last, cos, sin, attnMask);
            x = last;
        } else {
            for (int l = 0; l < layers.length; l++) x = layerInOwnScope(l, x, cos, sin, attnMask, cache, past);
        }
        x = rmsNorm(x, finalNorm);
        if (cache != null) cache.advance(t);
        return x;
    }

    /** What a checkpointed forward kept for {@link #finishBackward()}: the embedding output, each layer's input, the graph's new leaf. */
    private record Checkpoints(Tensor embedded, Tensor[] inputs, Tensor last, Tensor cos, Tensor sin, Tensor attnMask) {}

    /**
     * Activation checkpointing per decoder layer ({@code --grad-checkpointing}): a training forward then keeps only
     * the layers' inputs (L x tokens x hidden) instead of every activation, and the caller must call
     * {@link #finishBackward()} after its {@code backward}, which recomputes each layer (last to first) with a graph
     * and carries the gradient through it into the parameters. Same gradients (up to the order of float additions).
     * Frozen models, inference mode and generation are unaffected.
     */
    public CausalLM checkpointing(boolean on) {
        this.checkpointing = on;
        return this;
    }

    public boolean checkpointing() { return checkpointing; }

    /**
     * Completes the backward of a checkpointed forward (see {@link #checkpointing(boolean)}); a no-op otherwise, so
     * training code calls it after every {@code backward}. Must run in the same {@code PointerScope} as the forward.
     */
    public void finishBackward() {
        Checkpoints c = pending;
        pending = null;
        if (c == null) return;
        Tensor g = c.last().grad();
        if (g == null || !g.defined()) return; // nothing flowed back through the body
        for (int l = layers.length - 1; l >= 0; l--) {
            Tensor in = c.inputs()[l].detach().requires_grad_(true);
            Tensor out = layerInOwnScope(l, in, c.cos(), c.sin(), c.attnMask(), null, 0);
            out.backward(g, new BoolOptional(), false, new TensorArrayRefOptional());
            g = in.grad();
        }
        c.embedded().backward(g, new BoolOptional(), false, new TensorArrayRefOptional());
    }

    /**
     * Runs one layer in its own {@link PointerScope} and hands only its output to the caller's scope, so the
     * Java handles of the layer's intermediates do not keep their storage alive until the caller's step ends
     * (autograd keeps what backward needs by itself). Without this, inference memory would hold every
     * intermediate of every layer.
     */
    private Tensor layerInOwnScope(int l, Tensor x, Tensor cos, Tensor sin, Tensor attnMask, KvCache cache, long past) {
        PointerScope outer = PointerScope.getInnerScope();
        Tensor out;
        try (PointerScope inner = new PointerScope()) {
            out = layer(l, x, cos, sin, attnMask, cache, past);
            out.retainReference();   // survives the inner scope's release (note: detach() would release it)
        }
        if (outer != null) {
            outer.attach(out);       // +1, released when the caller's scope closes
            out.releaseReference();  // drop ours
        }
        return out;
    }

    private Tensor layer(int l, Tensor x, Tensor cos, Tensor sin, Tensor attnMask, KvCache cache, long past) {
        Layer w = layers[l];
        long b = x.size(0), t = x.size(1);
        int h = config.numHeads(), kvh = config.numKvHeads(), hd = config.headDim();
        Tensor hIn = rmsNorm(x, w.inNorm());
        Tensor q = linear(hIn, w.q(), w.qb()).view(b, t, h, hd).transpose(1, 2);
        Tensor k = linear(hIn, w.k(), w.kb()).view(b, t, kvh, hd).transpose(1, 2);
        Tensor v = linear(hIn, w.v(), w.vb()).view(b, t, kvh, hd).transpose(1, 2);
        q = rope(q, cos, sin);
        k = rope(k, cos, sin);
        if (cache != null) {
            cache.write(l, k, v, past);
            k = cache.keys(l, past + t);
            v = cache.values(l, past + t);
        }
        k = repeatKv(k);
        v = repeatKv(v);
        Tensor a = torch.scaled_dot_product_attention(q, k, v, attnMask == null ? new TensorOptional() : new TensorOptional(attnMask),
                0.0, attnMask == null, new DoubleOptional(), false);
        a = a.transpose(1, 2).reshape(b, t, (long) h * hd);
        x = x.add(linear(a, w.o(), w.ob()));
        Tensor hPost = rmsNorm(x, w.postNorm());
        Tensor mlp = linear(torch.silu(linear(hPost, w.gate(), null)).mul(linear(hPost, w.up(), null)), w.down(), null);
        return x.add(mlp);
    }

    private static Tensor linear(Tensor x, Tensor w, Tensor bias) {
        return bias == null ? torch.linear(x, w) : torch.linear(x, w, new TensorOptional(bias));
    }

    /** RMSNorm as Hugging Face: normalise in float32, cast back, then multiply by the weight. */
    private Tensor rmsNorm(Tensor x, Tensor weight) {
        Tensor x32 = dtype.value == ScalarType.Double.value ? x : x.to(ScalarType.Float);
        Tensor var = x32.pow(scalar(2)).mean(new long[] {-1}, true, new ScalarTypeOptional());
        Tensor y = x32.mul(var.add(scalar(config.rmsNormEps())).rsqrt());
        return weight.mul(y.to(dtype));
    }

    /** Rotate-half RoPE: x * cos + rotate_half(x) * sin, rotate_half(x) = cat(-x2, x1). */
    private static Tensor rope(Tensor x, Tensor cos, Tensor sin) {
        long half = x.size(-1) / 2;
        Tensor x1 = x.narrow(-1, 0, half), x2 = x.narrow(-1, half, half);
        Tensor rot = torch.cat(new TensorVector(x2.neg(), x1), -1);
        return x.mul(cos).add(rot.mul(sin));
    }

    /** [B, KV, S, hd] -> [B, KV * group, S, hd], head h using kv head h / group (Hugging Face repeat_kv). */
    private Tensor repeatKv(Tensor kv) {
        int g = config.groupSize();
        if (g == 1) return kv;
        long b = kv.size(0), n = kv.size(1), s = kv.size(2), d = kv.size(3);
        return kv.unsqueeze(2).expand(b, n, g, s, d).reshape(b, n * g, s, d);
    }
}
