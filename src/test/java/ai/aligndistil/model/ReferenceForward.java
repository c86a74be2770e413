package ai.aligndistil.model;

import java.io.IOException;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.Map;

import ai.aligndistil.io.Safetensors;

/**
 * A straightforward float64 forward pass of a Qwen2/Llama checkpoint, written from the definitions and
 * independent of libtorch: embedding, RMSNorm, rotate-half RoPE with position ids cumsum(mask)-1, grouped-query
 * causal softmax attention with a padding mask (a padded query attends to itself only), SwiGLU MLP, head.
 */
final class ReferenceForward {
    private final ModelConfig c;
    private final Map<String, double[]> w = new HashMap<>();

    ReferenceForward(Path dir) throws IOException {
        c = ModelConfig.read(dir);
        try (Safetensors.Reader r = Safetensors.open(dir.resolve("model.safetensors"))) {
            for (String name : r.tensors().keySet()) {
                float[] f = r.readFloats(name);
                double[] d = new double[f.length];
                for (int i = 0; i < f.length; i++) d[i] = f[i];
                w.put(name, d);
            }
        }
    }

    /** Logits [T][V] of one row; mask[t] = 0 marks padding. */
    double[][] forward(long[] ids, long[] mask) {
        int t = ids.length, d = c.hiddenSize(), h = c.numHeads(), kvh = c.numKvHeads(), hd = c.headDim(), v = c.vocabSize();
        int[] pos = new int[t];
        int run = 0;
        for (int i = 0; i < t; i++) {
            run += (int) mask[i];
            pos[i] = mask[i] == 0 ? 1 : run - 1;
        }
        double[] emb = w.get("model.embed_tokens.weight");
        double[][] x = new double[t][d];
        for (int i = 0; i < t; i++) System.arraycopy(emb, (int) ids[i] * d, x[i], 0, d);
        for (int l = 0; l < c.numLayers(); l++) {
            String p = "model.layers." + l + ".";
            double[][] q = new double[t][], k = new double[t][], vv = new double[t][];
            for (int i = 0; i < t; i++) {
                double[] n = rms(x[i], w.get(p + "input_layernorm.weight"));
                q[i] = mv(w.get(p + "self_attn.q_proj.weight"), w.get(p + "self_attn.q_proj.bias"), n, h * hd);
                k[i] = mv(w.get(p + "self_attn.k_proj.weight"), w.get(p + "self_attn.k_proj.bias"), n, kvh * hd);
                vv[i] = mv(w.get(p + "self_attn.v_proj.weight"), w.get(p + "self_attn.v_proj.bias"), n, kvh * hd);
                rope(q[i], h, hd, pos[i]);
                rope(k[i], kvh, hd, pos[i]);
            }
            double[][] attnOut = new double[t][h * hd];
            for (int i = 0; i < t; i++) {
                for (int head = 0; head < h; head++) {
                    int kvHead = head / (h / kvh);
                    double[] s = new double[t];
                    double max = Double.NEGATIVE_INFINITY;
                    for (int j = 0; j < t; j++) {
                        boolean ok = j == i || (j <= i && mask[j] != 0);
                        if (!ok) { s[j] = Double.NEGATIVE_INFINITY; continue; }
                        double dot = 0;
                        for (int e = 0; e < hd; e++) dot += q[i][head * hd + e] * k[j][kvHead * hd + e];
                        s[j] = dot / Math.sqrt(hd);
                        max = Math.max(max, s[j]);
                    }
                    double z = 0;
                    for (int j = 0; j < t; j++) { s[j] = Math.exp(s[j] - max); z += s[j]; }
                    for (int j = 0; j < t; j++) {
                        double a = s[j] / z;
                        if (a == 0) continue;
                        for (int e = 0; e < hd; e++) attnOut[i][head * hd + e] += a * vv[j][kvHead * hd + e];
                    }
                }
            }
            for (int i = 0; i < t; i++) {
                double[] o = mv(w.get(p + "self_attn.o_proj.weight"), w.get(p + "self_attn.o_proj.bias"), attnOut[i], d);
                for (int e = 0; e < d; e++) x[i][e] += o[e];
                double[] n = rms(x[i], w.get(p + "post_attention_layernorm.weight"));
                double[] g = mv(w.get(p + "mlp.gate_proj.weight"), null, n, c.intermediateSize());
                double[] u = mv(w.get(p + "mlp.up_proj.weight"), null, n, c.intermediateSize());
                for (int e = 0; e < g.length; e++) g[e] = g[e] / (1 + Math.exp(-g[e])) * u[e];
                double[] dn = mv(w.get(p + "mlp.down_proj.weight"), null, g, d);
                for (int e = 0; e < d; e++) x[i][e] += dn[e];
            }
        }
        double[] head = c.tieWordEmbeddings() ? emb : w.get("lm_head.weight");
        double[][] out = new double[t][];
        for (int i = 0; i < t; i++) out[i] = mv(head, null, rms(x[i], w.get("model.norm.weight")), v);
        return out;
    }

    private double[] rms(double[] x, double[] g) {
        double ss = 0;
        for (double e : x) ss += e * e;
        double r = 1 / Math.sqrt(ss / x.length + c.rmsNormEps());
        double[] y = new double[x.length];
        for (int i = 0; i < x.length; i++) y[i] = x[i] * r * g[i];
        return y;
    }

    private static double[] mv(double[] m, double[] bias, double[] x, int rows) {
        int cols = x.length;
        double[] y = new double[rows];
        for (int r = 0; r < rows; r++) {
            double s = bias == null ? 0 : bias[r];
            for (int col = 0; col < cols; col++) s += m[r * cols + col] * x[col];
            y[r] = s;
        }
        return y;
    }

    private void rope(double[] x, int heads, int hd, int pos) {
        int half = hd / 2;
        for (int head = 0; head < heads; head++) {
            int o = head * hd;
            for (int i = 0; i < half; i++) {
                double ang = pos / Math.pow(c.ropeTheta(), 2.0 * i / hd);
                double cs = Math.cos(ang), sn = Math.sin(ang);
                double a = x[o + i], b = x[o + half + i];
                x[o + i] = a * cs - b * sn;
                x[o + half + i] = b * cs + a * sn;
            }
        }
    }
}
