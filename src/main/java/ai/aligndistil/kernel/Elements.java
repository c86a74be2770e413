package ai.aligndistil.kernel;

import ai.aligndistil.io.DType;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;

/** Reads and writes one element of an f32 / bf16 / f16 little-endian buffer (the reference path and tests); other dtypes throw. */
public final class Elements {
    private Elements() {}

    static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    static final ValueLayout.OfShort I16 = ValueLayout.JAVA_SHORT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);

    public static float get(MemorySegment seg, DType dt, long index) {
        return switch (dt) {
            case F32 -> seg.getAtIndex(F32, index);
            case BF16 -> bf16ToFloat(seg.getAtIndex(I16, index));
            case F16 -> Float.float16ToFloat(seg.getAtIndex(I16, index));
            default -> throw unsupported(dt);
        };
    }

    public static void set(MemorySegment seg, DType dt, long index, float v) {
        switch (dt) {
            case F32 -> seg.setAtIndex(F32, index, v);
            case BF16 -> seg.setAtIndex(I16, index, floatToBf16(v));
            case F16 -> seg.setAtIndex(I16, index, Float.floatToFloat16(v));
            default -> throw unsupported(dt);
        }
    }

    public static float bf16ToFloat(short bits) {
        return Float.intBitsToFloat((bits & 0xffff) << 16);
    }

    /** Round to nearest even, NaN kept quiet. */
    public static short floatToBf16(float f) {
        int bits = Float.floatToRawIntBits(f);
        if (Float.isNaN(f)) return (short) ((bits >>> 16) | 0x0040);
        int rounded = bits + 0x7fff + ((bits >>> 16) & 1);
        return (short) (rounded >>> 16);
    }

    /** The value a float takes after a round trip through the given dtype. */
    public static float round(DType dt, float v) {
        return switch (dt) {
            case F32 -> v;
            case BF16 -> bf16ToFloat(floatToBf16(v));
            case F16 -> Float.float16ToFloat(Float.floatToFloat16(v));
            default -> throw unsupported(dt);
        };
    }

    private static IllegalArgumentException unsupported(DType dt) {
        return new IllegalArgumentException("dtype " + dt + " is not an f32 / bf16 / f16 element type");
    }
}
