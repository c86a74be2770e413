package ai.aligndistil.kernel;

import ai.aligndistil.io.DType;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/**
 * Byte offsets of {@code ad_fdl_problem} and {@code ad_fdl_status} (native/include/aligndistil.h). Every field
 * is 8 bytes, so the offsets are the field index times 8 and the layout is the same on every 64-bit ABI.
 */
final class ProblemStruct {
    private ProblemStruct() {}

    static final long BATCH = 0, SEQ = 8, VOCAB = 16;
    static final long STUDENT = 24, STUDENT_DTYPE = 32, STUDENT_SB = 40, STUDENT_ST = 48;
    static final long DPO = 56, DPO_DTYPE = 64, DPO_SB = 72, DPO_ST = 80;
    static final long SECOND = 88, SECOND_DTYPE = 96, SECOND_SB = 104, SECOND_ST = 112;
    static final long MASK = 120, MASK_SB = 128, MASK_ST = 136;
    static final long GRAD = 144, GRAD_DTYPE = 152, GRAD_SB = 160, GRAD_ST = 168;
    static final long WEIGHT = 176, TOKEN_LOSS = 184, METRICS = 192;
    static final long VARIANT = 200, LENGTH_NORM = 208;
    static final long BETA = 216, BETA2 = 224, EPSILON = 232, TEMPERATURE = 240, STUDENT_TEMPERATURE = 248, SEQ_DIVISOR = 256;
    static final long SIZE = 264;

    static final long ST_CODE = 0, ST_TOKEN = 8, ST_COLUMN = 16, ST_LOSS = 24, ST_SELECTED = 32, ST_SEQUENCES = 40;
    static final long STATUS_SIZE = 48;

    static void putLong(MemorySegment s, long off, long v) { s.set(ValueLayout.JAVA_LONG, off, v); }
    static void putDouble(MemorySegment s, long off, double v) { s.set(ValueLayout.JAVA_DOUBLE, off, v); }
    static void putPtr(MemorySegment s, long off, MemorySegment p) { s.set(ValueLayout.JAVA_LONG, off, p == null ? 0L : p.address()); }
    static long getLong(MemorySegment s, long off) { return s.get(ValueLayout.JAVA_LONG, off); }
    static double getDouble(MemorySegment s, long off) { return s.get(ValueLayout.JAVA_DOUBLE, off); }

    /**
     * The ABI code of a dtype the kernels read and write (AD_F32 = 0, AD_BF16 = 1, AD_F16 = 2); any other element
     * type is an {@link IllegalArgumentException} naming {@code what}, raised before native code runs.
     */
    static int code(String what, DType dt) {
        return switch (dt) {
            case F32 -> 0;
            case BF16 -> 1;
            case F16 -> 2;
            default -> throw new IllegalArgumentException(what + " dtype " + dt + " is not supported by the kernels (f32, bf16 or f16)");
        };
    }

    // status codes (AD_*)
    static final int AD_OK = 0, AD_ERR_INVALID_ARGUMENT = 1, AD_ERR_NONFINITE = 2, AD_ERR_EMPTY_ROW = 3,
            AD_ERR_UNSUPPORTED = 4, AD_ERR_CUDA = 5, AD_ERR_OUT_OF_MEMORY = 6;

    static String codeName(long code) {
        return switch ((int) code) {
            case AD_OK -> "AD_OK";
            case AD_ERR_INVALID_ARGUMENT -> "AD_ERR_INVALID_ARGUMENT";
            case AD_ERR_NONFINITE -> "AD_ERR_NONFINITE";
            case AD_ERR_EMPTY_ROW -> "AD_ERR_EMPTY_ROW";
            case AD_ERR_UNSUPPORTED -> "AD_ERR_UNSUPPORTED";
            case AD_ERR_CUDA -> "AD_ERR_CUDA";
            case AD_ERR_OUT_OF_MEMORY -> "AD_ERR_OUT_OF_MEMORY";
            default -> "code " + code;
        };
    }
}
