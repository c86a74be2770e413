package ai.aligndistil.kernel;

import java.util.Locale;

/** Element types of logits and gradients the kernels read and write. Codes match AD_F32 / AD_BF16 / AD_F16. */
public enum DType {
    F32(0, 4),
    BF16(1, 2),
    F16(2, 2);

    /** The native code (aligndistil.h). */
    public final int code;
    public final int byteSize;

    DType(int code, int byteSize) {
        this.code = code;
        this.byteSize = byteSize;
    }

    /** Parses "f32", "float32", "bf16", "bfloat16", "f16", "float16" (any case). */
    public static DType parse(String s) {
        return switch (s.toLowerCase(Locale.ROOT)) {
            case "f32", "float32", "float" -> F32;
            case "bf16", "bfloat16" -> BF16;
            case "f16", "float16", "half" -> F16;
            default -> throw new IllegalArgumentException("unknown dtype '" + s + "' (expected f32, bf16 or f16)");
        };
    }

    @Override
    public String toString() { return name().toLowerCase(Locale.ROOT); }
}
