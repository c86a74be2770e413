package ai.aligndistil.train.dist;

import java.lang.foreign.MemorySegment;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HexFormat;
import java.util.Map;
import java.util.TreeMap;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;

import ai.aligndistil.model.Tensors;

/**
 * Fingerprints the ranks of a job compare before training: SHA-256 (first 16 hex digits) of the weights (names,
 * shapes, dtypes and every byte, in name order) and of the options (key=value, in key order).
 */
public final class WeightChecksum {
    private WeightChecksum() {}

    @SuppressWarnings("try")
    public static String of(Map<String, Tensor> params) {
        MessageDigest d = sha256();
        try (PointerScope s = new PointerScope()) {
            for (var e : new TreeMap<>(params).entrySet()) {
                Tensor t = e.getValue();
                Tensor c = (t.is_cuda() ? t.cpu() : t).contiguous();
                d.update((e.getKey() + java.util.Arrays.toString(Tensors.shape(c)) + c.scalar_type()).getBytes(StandardCharsets.UTF_8));
                MemorySegment seg = Tensors.segment(c);
                for (long off = 0; off < seg.byteSize(); off += 1L << 30) d.update(seg.asSlice(off, Math.min(1L << 30, seg.byteSize() - off)).asByteBuffer());
            }
        }
        return HexFormat.of().formatHex(d.digest()).substring(0, 16);
    }

    public static String ofOptions(Map<String, String> options) {
        MessageDigest d = sha256();
        for (var e : new TreeMap<>(options).entrySet()) d.update((e.getKey() + "=" + e.getValue() + "\n").getBytes(StandardCharsets.UTF_8));
        return HexFormat.of().formatHex(d.digest()).substring(0, 16);
    }

    private static MessageDigest sha256() {
        try {
            return MessageDigest.getInstance("SHA-256");
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }
}
