package ai.aligndistil.kernel.tool;

import ai.aligndistil.io.Safetensors;
import ai.aligndistil.io.Safetensors.SafetensorsException;
import ai.aligndistil.io.Safetensors.TensorInfo;
import ai.aligndistil.kernel.Backend;
import ai.aligndistil.io.DType;
import ai.aligndistil.kernel.FusedDistillLoss;
import ai.aligndistil.kernel.LossConfig;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.nio.file.Path;
import java.util.Arrays;

/**
 * The replay itself, without a command line: reads a batch dumped from another trainer (safetensors), runs the
 * fused loss, writes loss, token losses, weights, metrics and the gradient (safetensors, atomically, only on
 * success). Used by {@link ReplayCommand} and {@link SelfCheckCommand}; callable from an embedding program.
 *
 * <p>Input tensors: student_logits and dpo_logits [B,T,V] (f32, bf16 or f16), reverse_logits (aligndistil,
 * contrast) or reference_logits (adaptive, theorem1) [B,T,V], mask [B,T] (bool, u8, i32, i64 or f32; nonzero =
 * selected row, no shift). Output: loss (f64 scalar), token_loss [B,T], weight [B,T], metrics [B,T,3] and
 * grad_student_logits [B,T,V], all f32 but the loss.
 */
public final class Replay {
    private Replay() {}

    /** Summary of one replay. */
    public record Result(double loss, long batch, long seq, long vocab, long selectedRows, Backend backend) {}

    /** A replay that could not be done: the message names the file and the problem (one line). */
    public static final class ReplayException extends RuntimeException {
        private static final long serialVersionUID = 1L;
        private final boolean usage;

        ReplayException(String message, boolean usage) {
            super(message);
            this.usage = usage;
        }

        /** True when the request itself cannot be served here (an unavailable backend), false for a failure while running. */
        public boolean usage() { return usage; }
    }

    /** Reads {@code in}, runs the loss, writes {@code out}; any problem is a {@link ReplayException} naming the file. */
    public static Result run(Path in, Path out, LossConfig cfg, Backend backend, double seqDivisor) {
        FusedDistillLoss loss;
        try {
            loss = FusedDistillLoss.create(cfg, backend);
        } catch (IllegalStateException e) {
            throw new ReplayException(e.getMessage(), true);
        }
        try (Safetensors.Reader reader = Safetensors.open(in); Arena arena = Arena.ofShared()) {
            TensorInfo s = logitsInfo(reader, "student_logits");
            long B = s.shape()[0], T = s.shape()[1], V = s.shape()[2];
            if (B == 0 || T == 0 || V == 0) throw new SafetensorsException(in, "student_logits has an empty dimension " + s.shapeString());
            TensorInfo d = logitsInfo(reader, "dpo_logits");
            sameShape(in, s, d);
            TensorInfo sec = null;
            if (cfg.variant().needsSecondTeacher()) {
                String name = cfg.variant().secondTensorName;
                if (!reader.has(name)) {
                    String other = name.equals("reverse_logits") ? "reference_logits" : "reverse_logits";
                    throw new SafetensorsException(in, "missing tensor '" + name + "' (variant " + cfg.variant() + " needs it"
                            + (reader.has(other) ? "; the file has '" + other + "': choose the variant that uses it" : "") + ")");
                }
                sec = logitsInfo(reader, name);
                sameShape(in, s, sec);
            }
            MemorySegment mask = readMask(reader, in, B, T, arena);

            FusedDistillLoss.Batch batch = loss.newBatch(B, T, V);
            try {
                batch.student(input(reader, s, arena), s.dtype()).dpo(input(reader, d, arena), d.dtype());
                if (sec != null) batch.second(input(reader, sec, arena), sec.dtype());
                MemorySegment grad = arena.allocate(Math.multiplyExact(B * T * V, 4L), 64);
                MemorySegment weight = arena.allocate(B * T * 4, 64);
                MemorySegment tokenLoss = arena.allocate(B * T * 4, 64);
                MemorySegment metrics = arena.allocate(B * T * 12, 64);
                batch.mask(mask).grad(grad, DType.F32).weights(weight).tokenLosses(tokenLoss).metrics(metrics).sequenceDivisor(seqDivisor);
                double l;
                try {
                    l = batch.run();
                } catch (IllegalArgumentException e) {
                    throw new SafetensorsException(in, e.getMessage());
                }
                if (!Double.isFinite(l)) throw new SafetensorsException(in, "the loss is not finite (" + l + ")");
                new Safetensors.Writer()
                        .metadata("producer", "aligndistil replay")
                        .metadata("variant", cfg.variant().id())
                        .metadata("beta", Double.toString(cfg.beta()))
                        .metadata("beta2", Double.toString(cfg.beta2()))
                        .metadata("epsilon", Double.toString(cfg.epsilon()))
                        .metadata("temperature", Double.toString(cfg.temperature()))
                        .metadata("student_temperature", Double.toString(cfg.studentTemperature()))
                        .metadata("length_norm", Boolean.toString(cfg.lengthNorm()))
                        .metadata("backend", backend.id())
                        .addDoubles("loss", new long[0], new double[] {l})
                        .add("token_loss", DType.F32, new long[] {B, T}, tokenLoss)
                        .add("weight", DType.F32, new long[] {B, T}, weight)
                        .add("metrics", DType.F32, new long[] {B, T, 3}, metrics)
                        .add("grad_student_logits", DType.F32, new long[] {B, T, V}, grad)
                        .write(out);
                return new Result(l, B, T, V, batch.selectedRows(), backend);
            } finally {
                batch.close();
            }
        } catch (IOException e) {
            throw new ReplayException(e.getMessage(), false);
        } catch (OutOfMemoryError e) {
            throw new ReplayException(in + ": not enough memory for this batch (" + e.getMessage() + ")", false);
        } catch (IllegalStateException e) {
            throw new ReplayException(in + ": " + e.getMessage(), false);
        }
    }

    private static TensorInfo logitsInfo(Safetensors.Reader r, String name) throws SafetensorsException {
        TensorInfo t = r.info(name);
        if (t.shape().length != 3) throw new SafetensorsException(r.path(), name + " must be [B, T, V], got shape " + t.shapeString());
        dtype(r.path(), t);
        return t;
    }

    private static void dtype(Path p, TensorInfo t) throws SafetensorsException {
        if (!t.dtype().isKernelFloat())
            throw new SafetensorsException(p, t.name() + " has dtype " + t.dtype().name() + "; logits must be F32, BF16 or F16");
    }

    private static void sameShape(Path p, TensorInfo a, TensorInfo b) throws SafetensorsException {
        if (!Arrays.equals(a.shape(), b.shape()))
            throw new SafetensorsException(p, b.name() + " has shape " + b.shapeString() + " but " + a.name() + " has " + a.shapeString()
                    + (a.shape()[2] != b.shape()[2] ? " (vocabulary sizes differ)" : ""));
    }

    /** The mapped tensor, or an aligned copy when the file placed it at an offset not aligned to its element size. */
    private static MemorySegment input(Safetensors.Reader r, TensorInfo t, Arena arena) throws SafetensorsException {
        MemorySegment seg = r.segment(t.name());
        int size = t.dtype().byteSize;
        if (seg.address() % size == 0) return seg;
        MemorySegment copy = arena.allocate(seg.byteSize(), 64);
        copy.copyFrom(seg);
        return copy;
    }

    private static MemorySegment readMask(Safetensors.Reader r, Path p, long B, long T, Arena arena) throws SafetensorsException {
        TensorInfo m = r.info("mask");
        if (m.shape().length != 2 || m.shape()[0] != B || m.shape()[1] != T)
            throw new SafetensorsException(p, "mask has shape " + m.shapeString() + ", expected [" + B + ", " + T + "] to match student_logits");
        MemorySegment src = r.segment("mask");
        MemorySegment out = arena.allocate(B * T, 8);
        ValueLayout.OfInt i32 = ValueLayout.JAVA_INT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
        ValueLayout.OfLong i64 = ValueLayout.JAVA_LONG_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
        ValueLayout.OfFloat f32 = ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
        for (long i = 0; i < B * T; i++) {
            boolean on = switch (m.dtype()) {
                case BOOL, U8 -> src.get(ValueLayout.JAVA_BYTE, i) != 0;
                case I32 -> src.getAtIndex(i32, i) != 0;
                case I64 -> src.getAtIndex(i64, i) != 0;
                case F32 -> {
                    float f = src.getAtIndex(f32, i);
                    if (Float.isNaN(f)) throw new SafetensorsException(p, "mask is NaN at [" + i / T + ", " + i % T + "]");
                    yield f != 0f;
                }
                default -> throw new SafetensorsException(p, "mask has dtype " + m.dtype().name() + "; expected BOOL, U8, I32, I64 or F32");
            };
            out.set(ValueLayout.JAVA_BYTE, i, (byte) (on ? 1 : 0));
        }
        return out;
    }
}
