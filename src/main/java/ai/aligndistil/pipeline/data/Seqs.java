package ai.aligndistil.pipeline.data;

import java.lang.foreign.MemorySegment;
import java.util.List;

import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;

import ai.aligndistil.model.ChatTemplate;
import ai.aligndistil.model.Tensors;

/**
 * Token sequences (prompt then response, ending with EOS) packed into right-padded batches. With right padding
 * and a causal mask no real token attends to padding, so no attention mask is needed and position ids are
 * 0..T-1 as for an unpadded sequence.
 */
public final class Seqs {
    private Seqs() {}

    /** A packed batch: ids [B, T] (int64) and each row's prompt length P and total length S. */
    public record Packed(Tensor ids, int[] promptLen, int[] len, int width) {
        public int rows() { return len.length; }
    }

    public static Packed pack(List<ChatTemplate.Example> ex, long pad) {
        int b = ex.size(), t = 0;
        for (ChatTemplate.Example e : ex) t = Math.max(t, e.ids().length);
        long[][] rows = new long[b][t];
        int[] p = new int[b], s = new int[b];
        for (int i = 0; i < b; i++) {
            long[] ids = ex.get(i).ids();
            java.util.Arrays.fill(rows[i], pad);
            System.arraycopy(ids, 0, rows[i], 0, ids.length);
            p[i] = ex.get(i).promptLength();
            s[i] = ids.length;
        }
        return new Packed(Tensors.longs(rows), p, s, t);
    }

    /**
     * float32 [B, T-1] mask of the shifted target positions: 1 at logit rows P-1..S-2 (the rows that predict the
     * response tokens P..S-1, EOS included).
     */
    public static Tensor targetMask(Packed p) {
        int w = p.width() - 1;
        float[] m = new float[p.rows() * w];
        for (int i = 0; i < p.rows(); i++) for (int t = p.promptLen()[i] - 1; t <= p.len()[i] - 2; t++) m[i * w + t] = 1f;
        return Tensors.fromFloats(m, p.rows(), w);
    }

    /** {@link #targetMask(Packed)} on the device of {@code like}. */
    public static Tensor targetMask(Packed p, Tensor like) {
        return sameDevice(targetMask(p), like);
    }

    /** A host tensor moved to the device of {@code like} (itself when {@code like} is on the host). */
    public static Tensor sameDevice(Tensor host, Tensor like) {
        return like.is_cuda() ? host.to(like.device(), host.scalar_type()) : host;
    }

    /** Per-row log-probability (float32 [B]) of the response tokens, summed (spec 6.1): differentiable through {@code logits}. */
    public static Tensor responseLogProbs(Tensor logits, Packed p) {
        int w = p.width() - 1;
        Tensor lp = logits.narrow(1, 0, w).to(ScalarType.Float).log_softmax(-1);
        Tensor targets = sameDevice(p.ids().narrow(1, 1, w).unsqueeze(2), logits);
        Tensor tok = lp.gather(2, targets).squeeze(2);
        return tok.mul(targetMask(p, tok)).sum(new long[] {1}, false, new org.bytedeco.pytorch.ScalarTypeOptional());
    }

    /** Which logit rows the distillation uses (spec 3.2). */
    public enum Positions {
        /** The paper: rows P-1..S-2, the distributions of the response tokens. */
        PAPER,
        /** The official off-policy trainer: rows P..S-1. */
        CODE_OFFPOLICY,
        /** The official on-policy trainer: rows P..S-2. */
        CODE_ONPOLICY;

        public static Positions parse(String s, boolean onPolicy) {
            return switch (s) {
                case "paper" -> PAPER;
                case "official" -> onPolicy ? CODE_ONPOLICY : CODE_OFFPOLICY;
                case "official-off-policy", "code-off-policy" -> CODE_OFFPOLICY;
                case "official-on-policy", "code-on-policy" -> CODE_ONPOLICY;
                default -> throw new IllegalArgumentException("--positions must be paper, official, official-off-policy or official-on-policy, got '" + s + "'");
            };
        }

        int first(int promptLen) { return this == PAPER ? promptLen - 1 : promptLen; }

        int last(int len) { return this == CODE_OFFPOLICY ? len - 1 : len - 2; }
    }

    /** Writes the u8 [B, T] distillation mask into {@code seg}; returns the number of selected rows per sequence. */
    public static int[] distillMask(Packed p, Positions pos, MemorySegment seg) {
        int t = p.width();
        seg.fill((byte) 0);
        int[] n = new int[p.rows()];
        for (int i = 0; i < p.rows(); i++) {
            for (int r = pos.first(p.promptLen()[i]); r <= pos.last(p.len()[i]); r++) {
                seg.set(java.lang.foreign.ValueLayout.JAVA_BYTE, (long) i * t + r, (byte) 1);
                n[i]++;
            }
        }
        return n;
    }
}
