package ai.aligndistil.bench;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.SplittableRandom;

import ai.aligndistil.io.DType;
import ai.aligndistil.kernel.Elements;

/**
 * The inputs of one benchmark case in native memory: student, DPO and second-teacher logits [B, T, V] in one
 * dtype, an all-ones u8 mask [B, T] (every row selected, so every backend does the same work on every row), and
 * a gradient buffer.
 *
 * <p>Shape: {@code tokens} rows split into B = 4 sequences of T = tokens / 4 (1 x tokens below 4 tokens), so the
 * length normalisation and the per-sequence mean are exercised. Values follow the project's test distribution
 * (a shared Gaussian "base" of scale 3 per column, teachers 0.5 and the student 0.7 away from it), drawn once
 * into a pool of V + 8191 columns; each row copies the pool from its own random offset. Filling a 311 MB tensor
 * is then a few memcpys instead of 78 M Gaussian draws, and the rows still differ.
 */
final class BenchData implements AutoCloseable {
    static final int POOL_SPREAD = 8191;

    final int B, T, V;
    final DType dtype, gradType;
    final Arena arena;
    final MemorySegment student, dpo, second, mask, grad;

    BenchData(int tokens, int vocab, DType dtype, DType gradType, long seed) {
        if (tokens < 1 || vocab < 1) throw new IllegalArgumentException("tokens and vocab must be >= 1");
        this.B = tokens >= 4 && tokens % 4 == 0 ? 4 : 1;
        this.T = tokens / B;
        this.V = vocab;
        this.dtype = dtype;
        this.gradType = gradType;
        this.arena = Arena.ofShared();
        long n = (long) B * T * V;
        int es = dtype.byteSize;
        student = arena.allocate(n * es, 64);
        dpo = arena.allocate(n * es, 64);
        second = arena.allocate(n * es, 64);
        grad = arena.allocate(n * gradType.byteSize, 64);
        mask = arena.allocate((long) B * T, 8);
        mask.fill((byte) 1);

        int poolLen = V + POOL_SPREAD;
        MemorySegment ps = arena.allocate((long) poolLen * es, 64);
        MemorySegment pd = arena.allocate((long) poolLen * es, 64);
        MemorySegment pr = arena.allocate((long) poolLen * es, 64);
        SplittableRandom r = new SplittableRandom(seed);
        for (int i = 0; i < poolLen; i++) {
            double base = 3.0 * r.nextGaussian();
            Elements.set(pd, dtype, i, (float) (base + 0.5 * r.nextGaussian()));
            Elements.set(pr, dtype, i, (float) (base + 0.5 * r.nextGaussian()));
            Elements.set(ps, dtype, i, (float) (base + 0.7 * r.nextGaussian()));
        }
        long rowBytes = (long) V * es;
        for (long row = 0; row < (long) B * T; row++) {
            long off = (long) r.nextInt(POOL_SPREAD + 1) * es;
            MemorySegment.copy(ps, off, student, row * rowBytes, rowBytes);
            MemorySegment.copy(pd, off, dpo, row * rowBytes, rowBytes);
            MemorySegment.copy(pr, off, second, row * rowBytes, rowBytes);
        }
    }

    long rows() { return (long) B * T; }

    long elements() { return (long) B * T * V; }

    /** Bytes a perfect kernel moves: three input rows read and one gradient row written per token. */
    long trafficBytes() { return elements() * (3L * dtype.byteSize + gradType.byteSize); }

    /** One row of an input tensor (flat row index), as a segment of V elements. */
    static MemorySegment row(MemorySegment tensor, DType dt, long row, int V) {
        return tensor.asSlice(row * V * dt.byteSize, (long) V * dt.byteSize);
    }

    /** Fills the gradient with a poison pattern (NaN in every dtype), so a row the kernel skips shows up. */
    void poisonGrad() {
        grad.fill((byte) 0xff);
    }

    float gradAt(long index) {
        return Elements.get(grad, gradType, index);
    }

    static float at(MemorySegment seg, DType dt, long index) {
        return dt == DType.F32 ? seg.getAtIndex(ValueLayout.JAVA_FLOAT_UNALIGNED, index) : Elements.get(seg, dt, index);
    }

    @Override
    public void close() {
        arena.close();
    }
}
