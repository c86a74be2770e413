package ai.aligndistil.model;

import ai.aligndistil.io.DType;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import org.bytedeco.javacpp.Pointer;
import org.bytedeco.pytorch.DeviceOptional;
import org.bytedeco.pytorch.MemoryFormatOptional;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

import ai.aligndistil.io.Safetensors;

/** Small helpers between Java arrays, FFM segments and libtorch tensors; device tensors reach the host only through {@link #host}. */
@SuppressWarnings("restricted")
public final class Tensors {
    private Tensors() {}

    /** Options for a CPU tensor of the given dtype. */
    public static TensorOptions options(ScalarType dtype) { return new TensorOptions(dtype); }

    /** An uninitialised contiguous CPU tensor. */
    public static Tensor empty(ScalarType dtype, long... shape) {
        return torch.empty(shape, options(dtype), new MemoryFormatOptional());
    }

    public static Tensor zeros(ScalarType dtype, long... shape) {
        return torch.zeros(shape, options(dtype));
    }

    /** Options for a tensor of {@code dtype} on {@code device}. */
    public static TensorOptions options(ScalarType dtype, Devices.Choice device) {
        TensorOptions o = options(dtype);
        return device.cuda() ? o.device(new DeviceOptional(device.torch())) : o;
    }

    /** Zeros of {@code dtype} on {@code device}. */
    public static Tensor zeros(ScalarType dtype, Devices.Choice device, long... shape) {
        return torch.zeros(shape, options(dtype, device));
    }

    /** Bytes copied from a device to the host by {@link #host} since the process started (tests read it). */
    private static final java.util.concurrent.atomic.AtomicLong HOST_COPY_BYTES = new java.util.concurrent.atomic.AtomicLong();

    /** Total bytes {@link #host} has copied from a device to the host so far. */
    public static long hostCopyBytes() { return HOST_COPY_BYTES.get(); }

    /**
     * {@code t} itself when it is in host memory, else a host copy (counted in {@link #hostCopyBytes()}: the CUDA
     * tests assert that a distillation step never copies logits this way). The one way the project reads a device
     * tensor on the host.
     */
    public static Tensor host(Tensor t) {
        if (t.is_cpu()) return t;
        HOST_COPY_BYTES.addAndGet(t.nbytes());
        return t.cpu();
    }

    public static Scalar scalar(double v) { return new Scalar(v); }

    /** A [rows, cols] int64 tensor from equally long rows. */
    public static Tensor longs(long[][] rows) {
        int cols = rows.length == 0 ? 0 : rows[0].length;
        long[] flat = new long[rows.length * cols];
        for (int i = 0; i < rows.length; i++) {
            if (rows[i].length != cols) throw new IllegalArgumentException("ragged rows");
            System.arraycopy(rows[i], 0, flat, i * cols, cols);
        }
        return fromLongs(flat, rows.length, cols);
    }

    /** An int64 tensor of the given shape holding a copy of {@code values}. */
    public static Tensor fromLongs(long[] values, long... shape) {
        Tensor t = empty(ScalarType.Long, shape);
        MemorySegment.copy(MemorySegment.ofArray(values), 0, segment(t), 0, values.length * 8L);
        return t;
    }

    /** A float64 tensor of the given shape holding a copy of {@code values}. */
    public static Tensor fromDoubles(double[] values, long... shape) {
        Tensor t = empty(ScalarType.Double, shape);
        MemorySegment.copy(MemorySegment.ofArray(values), 0, segment(t), 0, values.length * 8L);
        return t;
    }

    /** A u8 host tensor of the given shape holding a copy of the bytes of {@code values}. */
    public static Tensor fromBytes(MemorySegment values, long... shape) {
        Tensor t = empty(ScalarType.Byte, shape);
        MemorySegment.copy(values, 0, segment(t), 0, t.nbytes());
        return t;
    }

    /** {@code t} on {@code device} (itself when it is there already). */
    public static Tensor onDevice(Tensor t, Devices.Choice device) {
        if (t.is_cuda() == device.cuda()) return t;
        return t.to(device.torch(), t.scalar_type());
    }

    /** A float32 tensor of the given shape holding a copy of {@code values}. */
    public static Tensor fromFloats(float[] values, long... shape) {
        Tensor t = empty(ScalarType.Float, shape);
        MemorySegment.copy(MemorySegment.ofArray(values), 0, segment(t), 0, values.length * 4L);
        return t;
    }

    /** The bytes of a contiguous CPU tensor, as a segment that aliases the tensor's storage. */
    public static MemorySegment segment(Tensor t) {
        if (!t.is_contiguous()) throw new IllegalArgumentException("tensor is not contiguous");
        if (!t.is_cpu()) throw new IllegalArgumentException("tensor is on " + t.device().str().getString() + ", not in host memory (use Tensors.host, or deviceSegment for a kernel)");
        return MemorySegment.ofAddress(t.data_ptr().address()).reinterpret(t.nbytes());
    }

    /**
     * The device memory of a contiguous tensor as a segment of its byte size at its device address, for a kernel
     * that takes device pointers ({@code FusedDistillLoss.Batch.runOnDevice}); never dereference it on the host.
     * For a CPU tensor this is {@link #segment}.
     */
    public static MemorySegment deviceSegment(Tensor t) {
        if (t.is_cpu()) return segment(t);
        if (!t.is_contiguous()) throw new IllegalArgumentException("tensor is not contiguous");
        return MemorySegment.ofAddress(t.data_ptr().address()).reinterpret(t.nbytes());
    }

    /** A copy of any floating tensor's values as float32, in row-major order. */
    public static float[] toFloats(Tensor t) {
        Tensor f = host(t).to(ScalarType.Float).contiguous();
        float[] out = new float[Math.toIntExact(f.numel())];
        MemorySegment.copy(segment(f), ValueLayout.JAVA_FLOAT, 0, out, 0, out.length);
        return out;
    }

    /** A copy of an integer tensor's values as int64. */
    public static long[] toLongs(Tensor t) {
        Tensor f = host(t).to(ScalarType.Long).contiguous();
        long[] out = new long[Math.toIntExact(f.numel())];
        MemorySegment.copy(segment(f), ValueLayout.JAVA_LONG, 0, out, 0, out.length);
        return out;
    }

    /** A JavaCPP pointer at a raw address (for {@code from_blob}). */
    public static Pointer pointer(long rawAddress) {
        // Note: inside the anonymous class the inherited field 'address' would shadow a parameter of that name.
        return new Pointer() {
            {
                this.address = rawAddress;
            }
        };
    }

    /** Tensor shape as a Java array. */
    public static long[] shape(Tensor t) {
        long[] s = new long[(int) t.dim()];
        for (int i = 0; i < s.length; i++) s[i] = t.size(i);
        return s;
    }

    /** Same dtype (JavaCPP enums must be compared by value, libtorch-presets.md gotcha 5). */
    public static boolean is(Tensor t, ScalarType dtype) { return t.scalar_type().value == dtype.value; }

    /** The safetensors dtype of a libtorch dtype. */
    public static DType fileType(ScalarType dtype) {
        if (dtype.value == ScalarType.Float.value) return DType.F32;
        if (dtype.value == ScalarType.BFloat16.value) return DType.BF16;
        if (dtype.value == ScalarType.Half.value) return DType.F16;
        if (dtype.value == ScalarType.Double.value) return DType.F64;
        if (dtype.value == ScalarType.Long.value) return DType.I64;
        if (dtype.value == ScalarType.Int.value) return DType.I32;
        if (dtype.value == ScalarType.Byte.value) return DType.U8;
        throw new IllegalArgumentException("no safetensors dtype for " + dtype);
    }

    /** The libtorch dtype of a safetensors dtype (the floating types and the common integer types). */
    public static ScalarType torchType(DType d) {
        return switch (d) {
            case F32 -> ScalarType.Float;
            case BF16 -> ScalarType.BFloat16;
            case F16 -> ScalarType.Half;
            case F64 -> ScalarType.Double;
            case I64 -> ScalarType.Long;
            case I32 -> ScalarType.Int;
            case U8 -> ScalarType.Byte;
            default -> throw new IllegalArgumentException("unsupported safetensors dtype " + d);
        };
    }

    /** {@code float32}/{@code bfloat16}/... as Hugging Face writes torch_dtype. */
    public static String hfName(ScalarType dtype) {
        if (dtype.value == ScalarType.Float.value) return "float32";
        if (dtype.value == ScalarType.BFloat16.value) return "bfloat16";
        if (dtype.value == ScalarType.Half.value) return "float16";
        throw new IllegalArgumentException("unsupported model dtype " + dtype);
    }

    /** Parses {@code f32|float32|bf16|bfloat16|f16|float16}; null for null. */
    public static ScalarType parseDtype(String s) {
        if (s == null) return null;
        return switch (s.toLowerCase(java.util.Locale.ROOT)) {
            case "f32", "float32", "float" -> ScalarType.Float;
            case "bf16", "bfloat16" -> ScalarType.BFloat16;
            case "f16", "float16", "half" -> ScalarType.Half;
            default -> throw new IllegalArgumentException("unknown dtype '" + s + "' (use f32 or bf16)");
        };
    }
}
