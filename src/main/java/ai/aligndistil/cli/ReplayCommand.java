package ai.aligndistil.cli;

import ai.aligndistil.io.Safetensors;
import ai.aligndistil.io.Safetensors.SafetensorsException;
import ai.aligndistil.io.Safetensors.TensorInfo;
import ai.aligndistil.kernel.Backend;
import ai.aligndistil.kernel.Backends;
import ai.aligndistil.kernel.DType;
import ai.aligndistil.kernel.FusedDistillLoss;
import ai.aligndistil.kernel.LossConfig;
import ai.aligndistil.kernel.Variant;

import java.io.IOException;
import java.io.PrintStream;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Set;

/**
 * {@code aligndistil replay}: the engine's loss and gradient on a batch dumped from another trainer.
 * <pre>
 * replay --in batch.safetensors --out result.safetensors [--variant NAME] [--beta B] [--beta2 B2]
 *        [--epsilon E] [--temperature T] [--student-temperature TS] [--length-norm | --no-length-norm]
 *        [--sequence-divisor N] [--backend reference|cpu|cuda]
 * </pre>
 * Input tensors: student_logits and dpo_logits [B,T,V] (f32, bf16 or f16), reverse_logits (aligndistil,
 * contrast) or reference_logits (adaptive, theorem1) [B,T,V], mask [B,T] (bool, u8, i32, i64 or f32; nonzero
 * = selected row, no shift). Output: loss (f64 scalar), token_loss [B,T], weight [B,T], metrics [B,T,3] and
 * grad_student_logits [B,T,V], all f32 but the loss. The output file is written atomically, and only on success.
 */
public final class ReplayCommand {
    private ReplayCommand() {}

    public static final String USAGE = """
            usage: aligndistil replay --in BATCH.safetensors --out RESULT.safetensors [options]
              --variant NAME            aligndistil (default) | contrast | adaptive | theorem1 | gkd
              --beta B                  0.1
              --beta2 B2                10
              --epsilon E               1e-3 (floor of the adaptive weight)
              --temperature T           1 (teacher temperature; gkd ignores it)
              --student-temperature TS  1
              --length-norm | --no-length-norm   divide each sequence by its selected rows (default on)
              --sequence-divisor N      divide by N sequences instead of the non-empty ones
              --backend NAME            reference | cpu | cuda (default: cpu when built, else reference)
            inputs : student_logits, dpo_logits, reverse_logits (aligndistil, contrast) or reference_logits
                     (adaptive, theorem1) [B,T,V] f32/bf16/f16; mask [B,T] bool/u8/i32/i64/f32
            outputs: loss (f64), token_loss [B,T], weight [B,T], metrics [B,T,3], grad_student_logits [B,T,V] (f32)""";

    private static final Set<String> VALUED = Set.of("in", "out", "variant", "beta", "beta2", "epsilon", "temperature",
            "student-temperature", "sequence-divisor", "backend");
    private static final Set<String> FLAGS = Set.of("length-norm", "help");

    /** Summary of one replay. */
    public record Result(double loss, long batch, long seq, long vocab, long selectedRows, Backend backend) {}

    public static int run(String[] argv, PrintStream out) {
        Args a = new Args("replay", argv, VALUED, FLAGS);
        if (a.flag("help", false)) {
            out.println(USAGE);
            return 0;
        }
        if (!a.positional().isEmpty()) throw CliException.usage("replay: unexpected argument '" + a.positional().get(0) + "'");
        Path in = Path.of(a.require("in"));
        Path outPath = Path.of(a.require("out"));
        LossConfig cfg;
        try {
            Variant v = Variant.parse(a.get("variant", "aligndistil"));
            cfg = new LossConfig(v, a.number("beta", LossConfig.DEFAULT_BETA), a.number("beta2", LossConfig.DEFAULT_BETA2),
                    a.number("epsilon", LossConfig.DEFAULT_EPSILON), a.number("temperature", 1.0),
                    a.number("student-temperature", 1.0), a.flag("length-norm", true));
        } catch (IllegalArgumentException e) {
            throw CliException.usage("replay: " + e.getMessage());
        }
        Backend backend;
        try {
            backend = a.has("backend") ? Backend.parse(a.get("backend", "")) : Backends.hostDefault();
        } catch (IllegalArgumentException e) {
            throw CliException.usage("replay: " + e.getMessage());
        }
        double divisor = a.number("sequence-divisor", 0);
        if (!(divisor >= 0) || Double.isInfinite(divisor)) throw CliException.usage("replay: --sequence-divisor must be finite and >= 0");
        Result r = replay(in, outPath, cfg, backend, divisor);
        out.printf("replay: loss %.9g over %d selected rows (B=%d, T=%d, V=%d), variant %s, backend %s; wrote %s%n",
                r.loss(), r.selectedRows(), r.batch(), r.seq(), r.vocab(), cfg.variant(), r.backend(), outPath);
        return 0;
    }

    /** Reads {@code in}, runs the loss, writes {@code out}; any problem is a {@link CliException} naming the file. */
    public static Result replay(Path in, Path out, LossConfig cfg, Backend backend, double seqDivisor) {
        FusedDistillLoss loss;
        try {
            loss = FusedDistillLoss.create(cfg, backend);
        } catch (IllegalStateException e) {
            throw CliException.failure("replay: " + e.getMessage());
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
                batch.student(input(reader, s, arena), dtype(s)).dpo(input(reader, d, arena), dtype(d));
                if (sec != null) batch.second(input(reader, sec, arena), dtype(sec));
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
                        .add("token_loss", Safetensors.DType.F32, new long[] {B, T}, tokenLoss)
                        .add("weight", Safetensors.DType.F32, new long[] {B, T}, weight)
                        .add("metrics", Safetensors.DType.F32, new long[] {B, T, 3}, metrics)
                        .add("grad_student_logits", Safetensors.DType.F32, new long[] {B, T, V}, grad)
                        .write(out);
                return new Result(l, B, T, V, batch.selectedRows(), backend);
            } finally {
                batch.close();
            }
        } catch (SafetensorsException e) {
            throw CliException.failure("replay: " + e.getMessage());
        } catch (IOException e) {
            throw CliException.failure("replay: " + e.getMessage());
        } catch (OutOfMemoryError e) {
            throw CliException.failure("replay: " + in + ": not enough memory for this batch (" + e.getMessage() + ")");
        } catch (IllegalStateException e) {
            throw CliException.failure("replay: " + in + ": " + e.getMessage());
        }
    }

    private static TensorInfo logitsInfo(Safetensors.Reader r, String name) throws SafetensorsException {
        TensorInfo t = r.info(name);
        if (t.shape().length != 3) throw new SafetensorsException(r.path(), name + " must be [B, T, V], got shape " + t.shapeString());
        dtype(r.path(), t);
        return t;
    }

    private static DType dtype(TensorInfo t) {
        return switch (t.dtype()) {
            case F32 -> DType.F32;
            case BF16 -> DType.BF16;
            case F16 -> DType.F16;
            default -> throw new IllegalStateException("unreachable");
        };
    }

    private static void dtype(Path p, TensorInfo t) throws SafetensorsException {
        switch (t.dtype()) {
            case F32, BF16, F16 -> { }
            default -> throw new SafetensorsException(p, t.name() + " has dtype " + t.dtype() + "; logits must be F32, BF16 or F16");
        }
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
                default -> throw new SafetensorsException(p, "mask has dtype " + m.dtype() + "; expected BOOL, U8, I32, I64 or F32");
            };
            out.set(ValueLayout.JAVA_BYTE, i, (byte) (on ? 1 : 0));
        }
        return out;
    }
}
