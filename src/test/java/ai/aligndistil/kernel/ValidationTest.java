package ai.aligndistil.kernel;

import ai.aligndistil.io.DType;
import org.junit.jupiter.api.Test;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.function.Consumer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Bad input gets an IllegalArgumentException with a precise message, before native code runs, and nothing is
 * written. Runs on the native CPU backend when it is built (else the reference), which is where a bad pointer
 * would otherwise crash the JVM.
 */
class ValidationTest {
    static final int B = 2, T = 3, V = 17;

    static Backend backend() { return Backends.available(Backend.CPU) ? Backend.CPU : Backend.REFERENCE; }

    private static void expect(String fragment, Consumer<FusedDistillLoss.Batch> setup) {
        try (Arena arena = Arena.ofConfined()) {
            Inputs in = new Inputs(Inputs.Spec.of(B, T, V, DType.F32, 3), arena);
            MemorySegment grad = arena.allocate((long) B * T * V * 4, 64);
            grad.fill((byte) 0x11);
            try (FusedDistillLoss.Batch b = FusedDistillLoss.create(LossConfig.defaults(), backend()).newBatch(B, T, V)) {
                b.student(in.student, DType.F32).dpo(in.dpo, DType.F32).second(in.second, DType.F32).mask(in.mask).grad(grad, DType.F32);
                IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> {
                    setup.accept(b);
                    b.run();
                });
                assertTrue(e.getMessage().contains(fragment), "message '" + e.getMessage() + "' should mention '" + fragment + "'");
            }
            for (long i = 0; i < grad.byteSize(); i++) assertEquals((byte) 0x11, grad.get(java.lang.foreign.ValueLayout.JAVA_BYTE, i), "grad written at byte " + i);
        }
    }

    @Test
    void badParameters() {
        for (double bad : new double[] {0, -1, Double.NaN, Double.POSITIVE_INFINITY}) {
            assertThrows(IllegalArgumentException.class, () -> LossConfig.defaults().withBeta(bad));
            assertThrows(IllegalArgumentException.class, () -> LossConfig.defaults().withBeta2(bad));
            assertThrows(IllegalArgumentException.class, () -> LossConfig.defaults().withEpsilon(bad));
            assertThrows(IllegalArgumentException.class, () -> LossConfig.defaults().withTemperature(bad));
            assertThrows(IllegalArgumentException.class, () -> LossConfig.defaults().withStudentTemperature(bad));
        }
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> LossConfig.defaults().withBeta(-0.5));
        assertEquals("beta must be finite and > 0, got -0.5", e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> LossConfig.defaults().withTemperature(0));
        assertEquals("temperature must be finite and > 0, got 0.0", e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> Variant.parse("ppo"));
        assertThrows(IllegalArgumentException.class, () -> DType.parse("f8"));
    }

    /** One dtype enum for files and kernels: the element types the kernels cannot read are refused, naming the tensor. */
    @Test
    void nonFloatDtypesAreRefusedBeforeNativeCode() {
        expect("student dtype i64 is not supported by the kernels (f32, bf16 or f16)", b -> b.student(wide(b), DType.I64));
        expect("dpo dtype f64 is not supported", b -> b.dpo(wide(b), DType.F64));
        expect("grad dtype bool is not supported", b -> b.grad(wide(b), DType.BOOL));
        assertEquals(DType.BF16, DType.parse("bfloat16"));
        assertEquals(DType.F32, DType.parse("F32"));
        assertEquals(DType.I64, DType.fromSafetensors("I64"));
        assertEquals(null, DType.fromSafetensors("i64"));
    }

    private static final Arena BIG = Arena.ofAuto();

    /** A native buffer large enough for [B, T, V] of 8-byte elements. */
    private static MemorySegment wide(FusedDistillLoss.Batch b) {
        return BIG.allocate(b.batch() * b.seq() * b.vocab() * 8, 64);
    }

    @Test
    void badShapes() {
        FusedDistillLoss l = FusedDistillLoss.create(LossConfig.defaults(), backend());
        assertThrows(IllegalArgumentException.class, () -> l.newBatch(0, 1, 1));
        assertThrows(IllegalArgumentException.class, () -> l.newBatch(1, -1, 1));
        assertThrows(IllegalArgumentException.class, () -> l.newBatch(1, 1, 0));
        assertThrows(IllegalArgumentException.class, () -> l.newBatch(1L << 40, 1L << 20, 1L << 20));
    }

    @Test
    void missingTensors() {
        expect("student logits are not set", b -> b.student(null, DType.F32));
        expect("dpo logits are not set", b -> b.dpo(null, DType.F32));
        expect("second-teacher (reverse_logits) logits are not set", b -> b.second(null, DType.F32));
        expect("grad logits are not set", b -> b.grad(null, DType.F32));
        expect("dtype is not set", b -> b.dpo(MemorySegment.ofArray(new float[B * T * V]), null));
    }

    @Test
    void tooSmallSegmentsAndMismatchedVocabulary() {
        try (Arena a = Arena.ofConfined()) {
            // A dpo tensor of a smaller vocabulary (V - 1) than the student's.
            expect("dpo segment has " + (B * T * (V - 1) * 4) + " bytes", b -> b.dpo(a.allocate((long) B * T * (V - 1) * 4, 64), DType.F32));
            expect("grad segment has 8 bytes", b -> b.grad(a.allocate(8, 64), DType.F32));
            expect("mask segment has 5 bytes", b -> b.mask(a.allocate(5, 8)));
            expect("weight segment has 4 bytes, needs 24", b -> b.weights(a.allocate(4, 8)));
            expect("metrics segment has 24 bytes, needs 72", b -> b.metrics(a.allocate(24, 8)));
            // bf16 buffer declared as f32 would read past its end.
            expect("student segment has " + (B * T * V * 2) + " bytes", b -> b.student(a.allocate((long) B * T * V * 2, 64), DType.F32));
        }
    }

    @Test
    void closedSegments() {
        Arena other = Arena.ofConfined();
        MemorySegment s = other.allocate((long) B * T * V * 4, 64);
        other.close();
        expect("student segment is closed", b -> b.student(s, DType.F32));
    }

    @Test
    void heapSegmentsNeedNativeMemoryOnNativeBackends() {
        if (backend() == Backend.REFERENCE) return;
        expect("on the Java heap", b -> b.dpo(MemorySegment.ofArray(new float[B * T * V]), DType.F32));
    }

    @Test
    void gradDtypeAndAliasing() {
        try (Arena a = Arena.ofConfined()) {
            expect("grad dtype f16 must be f32 or the student's dtype (f32)", b -> b.grad(a.allocate((long) B * T * V * 2, 64), DType.F16));
            expect("grad overlaps the dpo logits", b -> b.grad(b.dpoForTests(), DType.F32));
            MemorySegment big = a.allocate((long) B * T * V * 4 + 64, 64);
            expect("grad overlaps the student logits but is not the same view", b -> b.student(big, DType.F32).grad(big.asSlice(4), DType.F32));
            expect("rows overlap", b -> b.grad(a.allocate((long) B * T * V * 4, 64), DType.F32, T * V, V - 1));
            expect("weight overlaps token_loss", b -> {
                MemorySegment w = a.allocate(B * T * 4, 8);
                b.weights(w).tokenLosses(w);
            });
            expect("strides must be >= 0", b -> b.second(a.allocate((long) B * T * V * 4, 64), DType.F32, -1, V));
            expect("not aligned", b -> b.student(a.allocate((long) B * T * V * 4 + 8, 64).asSlice(2, (long) B * T * V * 4), DType.F32));
        }
        assertThrows(IllegalArgumentException.class, () -> FusedDistillLoss.create(LossConfig.defaults(), backend()).newBatch(1, 1, 1).sequenceDivisor(-1));
        assertThrows(IllegalArgumentException.class, () -> FusedDistillLoss.create(LossConfig.defaults(), backend()).newBatch(1, 1, 1).sequenceDivisor(Double.NaN));
    }
}
