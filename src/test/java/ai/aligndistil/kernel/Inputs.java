package ai.aligndistil.kernel;

import ai.aligndistil.io.DType;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.SplittableRandom;

/**
 * Seeded random inputs for the fused loss, in native memory, in any dtype. The values are what the kernels
 * see: every backend reads the same (possibly bf16-rounded) buffer, so comparisons measure arithmetic only.
 */
final class Inputs {
    final int B, T, V;
    final DType dtype;
    final MemorySegment student, dpo, second, mask;
    final long seed;

    /** Knobs of a case. */
    record Spec(int B, int T, int V, DType dtype, double scale, double maskRate, boolean emptySequence,
                int negInfTail, boolean identicalTeachers, boolean nearStudent, long seed) {
        Spec { }

        static Spec of(int B, int T, int V, DType dtype, long seed) {
            return new Spec(B, T, V, dtype, 3.0, 0.8, false, 0, false, false, seed);
        }

        Spec scale(double s) { return new Spec(B, T, V, dtype, s, maskRate, emptySequence, negInfTail, identicalTeachers, nearStudent, seed); }
        Spec maskRate(double r) { return new Spec(B, T, V, dtype, scale, r, emptySequence, negInfTail, identicalTeachers, nearStudent, seed); }
        Spec withEmptySequence() { return new Spec(B, T, V, dtype, scale, maskRate, true, negInfTail, identicalTeachers, nearStudent, seed); }
        Spec negInfTail(int n) { return new Spec(B, T, V, dtype, scale, maskRate, emptySequence, n, identicalTeachers, nearStudent, seed); }
        Spec withIdenticalTeachers() { return new Spec(B, T, V, dtype, scale, maskRate, emptySequence, negInfTail, true, nearStudent, seed); }
        Spec withNearStudent() { return new Spec(B, T, V, dtype, scale, maskRate, emptySequence, negInfTail, identicalTeachers, true, seed); }

        @Override
        public String toString() {
            return "B=" + B + " T=" + T + " V=" + V + " " + dtype + " scale=" + scale + " mask=" + maskRate
                    + (emptySequence ? " empty-seq" : "") + (negInfTail > 0 ? " -inf-tail=" + negInfTail : "")
                    + (identicalTeachers ? " identical-teachers" : "") + (nearStudent ? " student~teacher" : "") + " seed=" + seed;
        }
    }

    Inputs(Spec spec, Arena arena) {
        this.B = spec.B();
        this.T = spec.T();
        this.V = spec.V();
        this.dtype = spec.dtype();
        this.seed = spec.seed();
        long n = (long) B * T * V;
        student = arena.allocate(n * dtype.byteSize, 64);
        dpo = arena.allocate(n * dtype.byteSize, 64);
        second = arena.allocate(n * dtype.byteSize, 64);
        mask = arena.allocate((long) B * T, 8);
        SplittableRandom r = new SplittableRandom(spec.seed());
        for (int row = 0; row < B * T; row++) {
            for (int v = 0; v < V; v++) {
                long i = (long) row * V + v;
                boolean outside = spec.negInfTail() > 0 && v >= V - spec.negInfTail() && V - spec.negInfTail() > 0;
                if (outside) {
                    Elements.set(student, dtype, i, Float.NEGATIVE_INFINITY);
                    Elements.set(dpo, dtype, i, Float.NEGATIVE_INFINITY);
                    Elements.set(second, dtype, i, Float.NEGATIVE_INFINITY);
                    continue;
                }
                double base = spec.scale() * r.nextGaussian();
                double d = base + 0.5 * r.nextGaussian();
                double s2 = spec.identicalTeachers() ? d : base + 0.5 * r.nextGaussian();
                // near: KL(p || p_dpo) ~ 0.5 * 0.05^2 ~ 1e-3, the regime where the spec warns that f32 identities lose K's digits
                double st = spec.nearStudent() ? d + 0.05 * r.nextGaussian() : base + 0.7 * r.nextGaussian();
                Elements.set(student, dtype, i, (float) st);
                Elements.set(dpo, dtype, i, (float) d);
                Elements.set(second, dtype, i, (float) s2);
            }
        }
        for (int b = 0; b < B; b++) {
            for (int t = 0; t < T; t++) {
                boolean on = r.nextDouble() < spec.maskRate();
                if (spec.emptySequence() && b == B - 1) on = false;
                mask.set(java.lang.foreign.ValueLayout.JAVA_BYTE, (long) b * T + t, (byte) (on ? 1 : 0));
            }
        }
    }

    /** Outputs of one run, in native memory, with guard bytes before and after each buffer. */
    static final class Outputs {
        static final int GUARD = 256;
        static final byte GUARD_BYTE = (byte) 0x5a;
        final MemorySegment gradFull, grad, weightFull, weight, tokenLossFull, tokenLoss, metricsFull, metrics;
        final DType gradType;
        final long n;

        Outputs(Inputs in, DType gradType, Arena arena) {
            this.gradType = gradType;
            this.n = (long) in.B * in.T * in.V;
            gradFull = guarded(arena, n * gradType.byteSize);
            grad = gradFull.asSlice(GUARD, n * gradType.byteSize);
            long rows = (long) in.B * in.T;
            weightFull = guarded(arena, rows * 4);
            weight = weightFull.asSlice(GUARD, rows * 4);
            tokenLossFull = guarded(arena, rows * 4);
            tokenLoss = tokenLossFull.asSlice(GUARD, rows * 4);
            metricsFull = guarded(arena, rows * 12);
            metrics = metricsFull.asSlice(GUARD, rows * 12);
            // Poison the outputs: every element must be written (or zeroed) by the kernel.
            grad.fill((byte) 0x7f);
            weight.fill((byte) 0x7f);
            tokenLoss.fill((byte) 0x7f);
            metrics.fill((byte) 0x7f);
        }

        private static MemorySegment guarded(Arena arena, long bytes) {
            MemorySegment s = arena.allocate(bytes + 2L * GUARD, 64);
            s.fill(GUARD_BYTE);
            return s;
        }

        /** Name of the first buffer whose guard bytes changed, or null. */
        String guardViolation() {
            MemorySegment[] all = {gradFull, weightFull, tokenLossFull, metricsFull};
            String[] names = {"grad", "weight", "token_loss", "metrics"};
            for (int k = 0; k < all.length; k++) {
                MemorySegment s = all[k];
                long size = s.byteSize();
                for (long i = 0; i < GUARD; i++) {
                    if (s.get(java.lang.foreign.ValueLayout.JAVA_BYTE, i) != GUARD_BYTE) return names[k] + " (before, byte " + i + ")";
                    if (s.get(java.lang.foreign.ValueLayout.JAVA_BYTE, size - GUARD + i) != GUARD_BYTE) return names[k] + " (after, byte " + i + ")";
                }
            }
            return null;
        }

        float grad(long i) { return Elements.get(grad, gradType, i); }
        float weight(long row) { return weight.getAtIndex(Elements.F32, row); }
        float tokenLoss(long row) { return tokenLoss.getAtIndex(Elements.F32, row); }
        float metric(long row, int k) { return metrics.getAtIndex(Elements.F32, row * 3 + k); }
    }

    /** Runs {@code loss} on these inputs into {@code out}; returns the loss. */
    double run(FusedDistillLoss loss, Outputs out, boolean inPlace, double divisor) {
        try (FusedDistillLoss.Batch b = loss.newBatch(B, T, V)) {
            b.student(student, dtype).dpo(dpo, dtype).second(second, dtype).mask(mask)
                    .weights(out.weight).tokenLosses(out.tokenLoss).metrics(out.metrics).sequenceDivisor(divisor);
            if (inPlace) b.gradInPlace();
            else b.grad(out.grad, out.gradType);
            return b.run();
        }
    }
}
