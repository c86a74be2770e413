package ai.aligndistil.model;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.Random;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.BoolOptional;
import org.bytedeco.pytorch.InferenceMode;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorArrayRefOptional;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import ai.aligndistil.io.Json;
import ai.aligndistil.io.Safetensors;

@SuppressWarnings("try")
public class CausalLMTest {
    static final int V = 300;

    @TempDir Path tmp;

    /** Row 0 is full; row 1 is left-padded with 3 pads (id 0, mask 0). */
    static final long[][] IDS = {{5, 17, 42, 250, 7, 99, 123, 31}, {0, 0, 0, 88, 12, 201, 64, 3}};
    static final long[][] MASK = {{1, 1, 1, 1, 1, 1, 1, 1}, {0, 0, 0, 1, 1, 1, 1, 1}};

    public static float[][] logits(CausalLM m, long[][] ids, long[][] mask) {
        try (PointerScope s = new PointerScope(); InferenceMode im = new InferenceMode()) {
            Tensor out = m.forward(Tensors.longs(ids), mask == null ? null : Tensors.longs(mask));
            assertTrue(out.is_contiguous());
            float[] flat = Tensors.toFloats(out);
            int rows = ids.length;
            float[][] r = new float[rows][];
            int per = flat.length / rows;
            for (int b = 0; b < rows; b++) r[b] = java.util.Arrays.copyOfRange(flat, b * per, (b + 1) * per);
            return r;
        }
    }

    static void assertMatchesReference(Path dir, CausalLM m) throws IOException {
        ReferenceForward ref = new ReferenceForward(dir);
        float[][] got = logits(m, IDS, MASK);
        int v = m.config().vocabSize();
        double maxErr = 0;
        for (int b = 0; b < IDS.length; b++) {
            double[][] want = ref.forward(IDS[b], MASK[b]);
            for (int t = 0; t < IDS[b].length; t++) {
                if (MASK[b][t] == 0) continue;
                for (int j = 0; j < v; j++) maxErr = Math.max(maxErr, Math.abs(want[t][j] - got[b][t * v + j]));
            }
        }
        assertTrue(maxErr < 1e-5, "max |libtorch - float64 reference| = " + maxErr);
    }

    @Test
    void qwen2MatchesFloat64ReferenceIncludingLeftPadding() throws IOException {
        Path dir = TinyModels.write(tmp.resolve("qwen"), TinyModels.qwen2(V, 2), 1);
        assertMatchesReference(dir, HfCheckpoint.load(dir));
    }

    @Test
    void llamaStyleUntiedNoBiasMatchesReference() throws IOException {
        Path dir = TinyModels.write(tmp.resolve("llama"), TinyModels.llama(V, 2), 2);
        try (Safetensors.Reader r = Safetensors.open(dir.resolve("model.safetensors"))) {
            assertTrue(r.has("lm_head.weight"));
            assertTrue(!r.has("model.layers.0.self_attn.q_proj.bias"));
        }
        assertMatchesReference(dir, HfCheckpoint.load(dir));
    }

    @Test
    void leftPaddingDoesNotChangeTheRealTokensLogits() {
        CausalLM m = TinyModels.random(TinyModels.qwen2(V, 2), 3, ScalarType.Float);
        float[][] padded = logits(m, IDS, MASK);
        float[][] alone = logits(m, new long[][] {{88, 12, 201, 64, 3}}, null);
        for (int i = 0; i < 5 * V; i++) assertEquals(alone[0][i], padded[1][3 * V + i], 2e-5);
    }

    @Test
    void saveLoadRoundTripGivesIdenticalLogits() throws IOException {
        CausalLM m = TinyModels.random(TinyModels.qwen2(V, 2), 4, ScalarType.Float);
        Path dir = tmp.resolve("rt");
        HfCheckpoint.save(m, dir);
        CausalLM back = HfCheckpoint.load(dir);
        assertArrayEquals(logits(m, IDS, MASK)[1], logits(back, IDS, MASK)[1]);
        Map<String, Object> cfg = Json.parseObject(Files.readString(dir.resolve("config.json")));
        assertEquals("Qwen2ForCausalLM", ((List<?>) cfg.get("architectures")).get(0));
        assertEquals("float32", cfg.get("torch_dtype"));
        assertEquals(1L, cfg.get("bos_token_id"), "unknown keys survive a save");
        try (Safetensors.Reader r = Safetensors.open(dir.resolve("model.safetensors"))) {
            assertEquals("pt", r.metadata().get("format"));
            assertTrue(!r.has("lm_head.weight"), "a tied head is not saved separately");
            assertArrayEquals(new long[] {V, 64}, r.info("model.embed_tokens.weight").shape());
        }
    }

    @Test
    void mappedLoadIsFrozenAndGivesTheSameLogits() throws IOException {
        CausalLM m = TinyModels.random(TinyModels.qwen2(V, 2), 14, ScalarType.Float);
        Path dir = tmp.resolve("mapped");
        HfCheckpoint.save(m, dir, ScalarType.BFloat16);
        CausalLM copied = HfCheckpoint.load(dir);
        CausalLM mapped = HfCheckpoint.loadMapped(dir);
        assertTrue(mapped.isMapped() && mapped.isFrozen() && !copied.isMapped());
        assertTrue(Tensors.is(mapped.namedParameters().get("model.norm.weight"), ScalarType.BFloat16));
        assertTrue(!mapped.namedParameters().get("model.embed_tokens.weight").requires_grad());
        float[] a, b;
        try (PointerScope s = new PointerScope()) {
            a = Tensors.toFloats(copied.forwardInference(Tensors.longs(IDS), Tensors.longs(MASK)));
            b = Tensors.toFloats(mapped.forwardInference(Tensors.longs(IDS), Tensors.longs(MASK)));
        }
        assertArrayEquals(a, b);
        assertThrows(IllegalStateException.class, () -> mapped.initRandom(1, 0.1));
    }

    @Test
    void bf16SaveAndLoad() throws IOException {
        CausalLM m = TinyModels.random(TinyModels.qwen2(V, 2), 5, ScalarType.Float);
        Path dir = tmp.resolve("bf16");
        HfCheckpoint.save(m, dir, ScalarType.BFloat16);
        CausalLM b = HfCheckpoint.load(dir);
        assertTrue(Tensors.is(b.namedParameters().get("model.norm.weight"), ScalarType.BFloat16));
        CausalLM f = HfCheckpoint.load(dir, ScalarType.Float);
        float[][] lb = logits(b, IDS, MASK), lf = logits(f, IDS, MASK);
        double max = 0, err = 0;
        for (int i = 0; i < lf[0].length; i++) {
            max = Math.max(max, Math.abs(lf[0][i]));
            err = Math.max(err, Math.abs(lf[0][i] - lb[0][i]));
        }
        assertTrue(err < 0.05 * max + 0.05, "bf16 vs f32 logits differ by " + err + " (max |logit| " + max + ")");
    }

    @Test
    void shardedIndexLoads() throws IOException {
        CausalLM m = TinyModels.random(TinyModels.qwen2(V, 2), 6, ScalarType.Float);
        Path one = tmp.resolve("one");
        HfCheckpoint.save(m, one);
        Path sharded = tmp.resolve("sharded");
        Files.createDirectories(sharded);
        Files.copy(one.resolve("config.json"), sharded.resolve("config.json"));
        StringBuilder map = new StringBuilder("{\"metadata\":{},\"weight_map\":{");
        try (Safetensors.Reader r = Safetensors.open(one.resolve("model.safetensors"))) {
            Safetensors.Writer a = new Safetensors.Writer().metadata("format", "pt"), b = new Safetensors.Writer().metadata("format", "pt");
            boolean first = true;
            for (String name : r.tensors().keySet()) {
                boolean toA = name.contains("layers.0") || name.contains("embed");
                (toA ? a : b).add(name, r.info(name).dtype(), r.info(name).shape(), r.segment(name));
                map.append(first ? "" : ",").append('"').append(name).append("\":\"").append(toA ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors").append('"');
                first = false;
            }
            a.write(sharded.resolve("model-00001-of-00002.safetensors"));
            b.write(sharded.resolve("model-00002-of-00002.safetensors"));
        }
        Files.writeString(sharded.resolve(HfCheckpoint.INDEX), map.append("}}").toString());
        assertArrayEquals(logits(m, IDS, MASK)[0], logits(HfCheckpoint.load(sharded), IDS, MASK)[0]);
    }

    @Test
    void kvCachePathEqualsFullForward() {
        CausalLM m = TinyModels.random(TinyModels.qwen2(V, 2), 7, ScalarType.Float);
        float[][] full = logits(m, IDS, MASK);
        int prefill = 5;
        try (InferenceMode im = new InferenceMode()) {
            KvCache cache = new KvCache(m.config(), 2, 16, ScalarType.Float);
            try (PointerScope s = new PointerScope()) {
                long[][] ids = new long[2][], mask = new long[2][];
                for (int b = 0; b < 2; b++) {
                    ids[b] = java.util.Arrays.copyOf(IDS[b], prefill);
                    mask[b] = java.util.Arrays.copyOf(MASK[b], prefill);
                }
                float[] out = Tensors.toFloats(m.forward(Tensors.longs(ids), Tensors.longs(mask), cache));
                for (int b = 0; b < 2; b++)
                    for (int t = 0; t < prefill; t++)
                        for (int j = 0; j < V; j++)
                            if (MASK[b][t] == 1) assertEquals(full[b][t * V + j], out[(b * prefill + t) * V + j], 1e-5);
            }
            for (int t = prefill; t < IDS[0].length; t++) {
                try (PointerScope s = new PointerScope()) {
                    float[] out = Tensors.toFloats(m.forward(Tensors.longs(new long[][] {{IDS[0][t]}, {IDS[1][t]}}), null, cache));
                    for (int b = 0; b < 2; b++)
                        for (int j = 0; j < V; j++) assertEquals(full[b][t * V + j], out[b * V + j], 1e-5, "b=" + b + " t=" + t);
                }
            }
            assertEquals(IDS[0].length, cache.length());
        }
    }

    @Test
    void gradientMatchesFiniteDifferences() {
        CausalLM m = TinyModels.random(TinyModels.qwen2(V, 2), 8, ScalarType.Double);
        long[][] ids = {{5, 17, 42, 250, 7}, {0, 0, 88, 12, 201}};
        long[][] mask = {{1, 1, 1, 1, 1}, {0, 0, 1, 1, 1}};
        Random rnd = new Random(1);
        double[] weights = new double[2 * 5 * V];
        for (int i = 0; i < weights.length; i++) weights[i] = rnd.nextGaussian();
        Tensor r = Tensors.fromFloats(toFloat(weights), 2, 5, V).to(ScalarType.Double);
        try (PointerScope s = new PointerScope()) {
            Tensor loss = m.forward(Tensors.longs(ids), Tensors.longs(mask)).mul(r).sum();
            loss.backward();
        }
        String[] names = {"model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.bias",
                "model.layers.1.self_attn.v_proj.weight", "model.layers.1.mlp.down_proj.weight", "model.layers.0.input_layernorm.weight", "model.norm.weight"};
        for (String name : names) {
            Tensor p = m.namedParameters().get(name);
            long idx = name.contains("embed") ? 42L * 64 + 3 : 5;
            double analytic;
            try (PointerScope s = new PointerScope()) {
                analytic = p.grad().flatten(0, -1).select(0, idx).item_double();
            }
            double h = 1e-6;
            double plus = perturbedLoss(m, p, idx, h, ids, mask, r), minus = perturbedLoss(m, p, idx, -h, ids, mask, r);
            double numeric = (plus - minus) / (2 * h);
            assertEquals(numeric, analytic, 1e-6 * Math.max(1, Math.abs(numeric)), name);
        }
    }

    private static double perturbedLoss(CausalLM m, Tensor p, long idx, double h, long[][] ids, long[][] mask, Tensor r) {
        try (PointerScope s = new PointerScope(); NoGradGuard g = new NoGradGuard()) {
            Tensor flat = p.view(-1);
            double old = flat.select(0, idx).item_double();
            flat.select(0, idx).fill_(Tensors.scalar(old + h));
            double l = m.forward(Tensors.longs(ids), Tensors.longs(mask)).mul(r).sum().item_double();
            flat.select(0, idx).fill_(Tensors.scalar(old));
            return l;
        }
    }

    private static float[] toFloat(double[] d) {
        float[] f = new float[d.length];
        for (int i = 0; i < d.length; i++) f[i] = (float) d[i];
        return f;
    }

    @Test
    void externalGradientThroughLogitsBackward() {
        CausalLM m = TinyModels.random(TinyModels.qwen2(V, 1), 9, ScalarType.Float);
        Tensor g = Tensors.fromFloats(new float[2 * 8 * V], 2, 8, V);
        Random rnd = new Random(3);
        float[] gv = new float[2 * 8 * V];
        for (int i = 0; i < gv.length; i++) gv[i] = (float) rnd.nextGaussian();
        g = Tensors.fromFloats(gv, 2, 8, V);
        float[] viaBackward, viaSurrogate;
        try (PointerScope s = new PointerScope()) {
            Tensor logits = m.forward(Tensors.longs(IDS), Tensors.longs(MASK));
            assertTrue(logits.is_contiguous() && Tensors.is(logits, ScalarType.Float));
            assertTrue(logits.data_ptr().address() != 0);
            logits.backward(g, new BoolOptional(), false, new TensorArrayRefOptional());
            viaBackward = Tensors.toFloats(m.namedParameters().get("model.layers.0.mlp.up_proj.weight").grad());
        }
        m.zeroGrad();
        try (PointerScope s = new PointerScope()) {
            m.forward(Tensors.longs(IDS), Tensors.longs(MASK)).mul(g).sum().backward();
            viaSurrogate = Tensors.toFloats(m.namedParameters().get("model.layers.0.mlp.up_proj.weight").grad());
        }
        for (int i = 0; i < viaBackward.length; i++) assertEquals(viaSurrogate[i], viaBackward[i], 1e-5);
    }

    // ---- errors ------------------------------------------------------------------------------------

    @Test
    void missingTensorIsNamed() throws IOException {
        Path dir = TinyModels.write(tmp.resolve("m"), TinyModels.qwen2(V, 2), 10);
        rewriteWithout(dir, "model.layers.1.mlp.up_proj.weight", null);
        var e = assertThrows(HfCheckpoint.CheckpointException.class, () -> HfCheckpoint.load(dir));
        assertTrue(e.getMessage().contains("missing tensor 'model.layers.1.mlp.up_proj.weight'"), e.getMessage());
    }

    @Test
    void misshapedTensorIsNamed() throws IOException {
        Path dir = TinyModels.write(tmp.resolve("m"), TinyModels.qwen2(V, 2), 11);
        rewriteWithout(dir, "model.layers.0.self_attn.k_proj.weight", new long[] {64, 64});
        var e = assertThrows(HfCheckpoint.CheckpointException.class, () -> HfCheckpoint.load(dir));
        assertTrue(e.getMessage().contains("'model.layers.0.self_attn.k_proj.weight' has shape [64, 64] but config.json implies [32, 64]"), e.getMessage());
    }

    @Test
    void configThatDisagreesWithWeightsIsRefused() throws IOException {
        Path dir = TinyModels.write(tmp.resolve("m"), TinyModels.qwen2(V, 2), 12);
        Map<String, Object> j = TinyModels.qwen2Json(V, 1);
        Files.writeString(dir.resolve("config.json"), Json.write(j));
        var e = assertThrows(HfCheckpoint.CheckpointException.class, () -> HfCheckpoint.load(dir));
        assertTrue(e.getMessage().contains("unexpected tensor 'model.layers.1."), e.getMessage());
        j = TinyModels.qwen2Json(V + 1, 2);
        Files.writeString(dir.resolve("config.json"), Json.write(j));
        e = assertThrows(HfCheckpoint.CheckpointException.class, () -> HfCheckpoint.load(dir));
        assertTrue(e.getMessage().contains("'model.embed_tokens.weight' has shape [300, 64] but config.json implies [301, 64]"), e.getMessage());
    }

    @Test
    void badConfigsAreRefusedWithAReason() throws IOException {
        Path dir = TinyModels.write(tmp.resolve("m"), TinyModels.qwen2(V, 2), 13);
        Map<String, Object> j = TinyModels.qwen2Json(V, 2);
        j.put("architectures", List.of("GPT2LMHeadModel"));
        j.remove("model_type");
        Files.writeString(dir.resolve("config.json"), Json.write(j));
        var e = assertThrows(ModelConfig.ConfigException.class, () -> HfCheckpoint.load(dir));
        assertTrue(e.getMessage().contains("unsupported architecture 'GPT2LMHeadModel'"), e.getMessage());
        Map<String, Object> k = TinyModels.qwen2Json(V, 2);
        k.put("num_key_value_heads", 3L);
        assertThrows(ModelConfig.ConfigException.class, () -> ModelConfig.fromJson(k), "heads not a multiple of kv heads");
        Map<String, Object> n = TinyModels.qwen2Json(V, 2);
        n.remove("hidden_size");
        var e2 = assertThrows(ModelConfig.ConfigException.class, () -> ModelConfig.fromJson(n));
        assertTrue(e2.getMessage().contains("hidden_size"));
        Files.writeString(dir.resolve("config.json"), "{not json");
        assertThrows(ModelConfig.ConfigException.class, () -> HfCheckpoint.load(dir));
        Files.delete(dir.resolve("model.safetensors"));
        Files.writeString(dir.resolve("config.json"), Json.write(TinyModels.qwen2Json(V, 2)));
        var e3 = assertThrows(HfCheckpoint.CheckpointException.class, () -> HfCheckpoint.load(dir));
        assertTrue(e3.getMessage().contains("no model.safetensors"), e3.getMessage());
    }

    @Test
    void ignoresRotaryBuffersAndARedundantTiedHead() throws IOException {
        CausalLM m = TinyModels.random(TinyModels.qwen2(V, 1), 15, ScalarType.Float);
        Path dir = tmp.resolve("extra");
        HfCheckpoint.save(m, dir);
        Path f = dir.resolve("model.safetensors");
        Safetensors.Writer w = new Safetensors.Writer().metadata("format", "pt");
        try (Safetensors.Reader r = Safetensors.open(f)) {
            for (String name : r.tensors().keySet())
                w.add(name, r.info(name).dtype(), r.info(name).shape(), java.lang.foreign.MemorySegment.ofArray(r.segment(name).toArray(java.lang.foreign.ValueLayout.JAVA_BYTE)));
            w.add("lm_head.weight", r.info("model.embed_tokens.weight").dtype(), r.info("model.embed_tokens.weight").shape(),
                    java.lang.foreign.MemorySegment.ofArray(r.segment("model.embed_tokens.weight").toArray(java.lang.foreign.ValueLayout.JAVA_BYTE)));
        }
        w.addFloats("model.layers.0.self_attn.rotary_emb.inv_freq", new long[] {8}, new float[8]);
        w.write(f);
        assertArrayEquals(logits(m, IDS, MASK)[0], logits(HfCheckpoint.load(dir), IDS, MASK)[0]);
    }

    /** Rewrites model.safetensors without {@code drop}, or with it replaced by a zero tensor of {@code newShape}. */
    private static void rewriteWithout(Path dir, String drop, long[] newShape) throws IOException {
        Path f = dir.resolve("model.safetensors");
        byte[] all = Files.readAllBytes(f);
        Safetensors.Writer w = new Safetensors.Writer();
        try (Safetensors.Reader r = Safetensors.open(f)) {
            for (String name : r.tensors().keySet()) {
                if (name.equals(drop)) {
                    if (newShape != null) w.addFloats(name, newShape, new float[(int) (newShape[0] * newShape[1])]);
                    continue;
                }
                byte[] copy = r.segment(name).toArray(java.lang.foreign.ValueLayout.JAVA_BYTE);
                w.add(name, r.info(name).dtype(), r.info(name).shape(), java.lang.foreign.MemorySegment.ofArray(copy));
            }
        }
        assertTrue(all.length > 0);
        w.write(f);
    }
}
