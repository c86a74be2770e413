package ai.aligndistil.io;

import java.util.Locale;

/**
 * Element types of tensors: the project's one dtype enum, for files (safetensors spells them with these names) and
 * for the fused-loss kernels ({@code ai.aligndistil.kernel} accepts {@link #F32}, {@link #BF16} and {@link #F16} for
 * logits and gradients, {@link #isKernelFloat()}, and rejects the others with a message before native code runs).
 * It lives in {@code io}, the bottom layer, so that the kernel, the model and the file formats share it; the
 * kernels' ABI codes (AD_F32, AD_BF16, AD_F16) stay in the kernel package.
 */
public enum DType {
    F64(8), F32(4), F16(2), BF16(2), I64(8), I32(4), I16(2), I8(1), U64(8), U32(4), U16(2), U8(1), BOOL(1);

    /** Bytes per element. */
    public final int byteSize;

    DType(int byteSize) { this.byteSize = byteSize; }

    public boolean isFloatingPoint() { return this == F64 || this == F32 || this == F16 || this == BF16; }

    /** The floating types the fused-loss kernels read and write: F32, BF16, F16. */
    public boolean isKernelFloat() { return this == F32 || this == BF16 || this == F16; }

    /**
     * Parses a name in any case: the enum's names ("f32", "BF16", "i64", "bool") and the aliases "float32", "float",
     * "bfloat16", "float16", "half", "float64", "double", "int64", "long", "int32", "int", "uint8", "byte".
     */
    public static DType parse(String s) {
        String k = s.trim().toUpperCase(Locale.ROOT);
        DType d = switch (k) {
            case "FLOAT32", "FLOAT" -> F32;
            case "BFLOAT16" -> BF16;
            case "FLOAT16", "HALF" -> F16;
            case "FLOAT64", "DOUBLE" -> F64;
            case "INT64", "LONG" -> I64;
            case "INT32", "INT" -> I32;
            case "UINT8", "BYTE" -> U8;
            default -> fromSafetensors(k);
        };
        if (d == null) throw new IllegalArgumentException("unknown dtype '" + s + "' (expected f32, bf16, f16, f64, i64, i32, i16, i8, u64, u32, u16, u8 or bool)");
        return d;
    }

    /** The type a safetensors header names ("F32", "BF16", ...: exact, upper case), or null. */
    public static DType fromSafetensors(String name) {
        for (DType d : values()) if (d.name().equals(name)) return d;
        return null;
    }

    /** Lower case, as the command lines spell it ("f32", "bf16"). */
    @Override
    public String toString() { return name().toLowerCase(Locale.ROOT); }
}
