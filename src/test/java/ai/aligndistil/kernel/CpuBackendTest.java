package ai.aligndistil.kernel;

import ai.aligndistil.io.DType;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

import java.lang.foreign.Arena;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The contract on the native CPU library with its automatic code path (AVX-512 on the build machines) and two
 * threads. The library must be there: a build without it is a failed build, not a skipped test.
 */
class CpuBackendTest extends FusedDistillLossContract {
    @BeforeAll
    static void libraryIsBuilt() {
        assertTrue(NativeCpu.available(), "libaligndistil_cpu did not load: " + NativeCpu.problem());
    }

    @Override
    Backend backend() { return Backend.CPU; }

    @Override
    int threads() { return 2; }

    /** The same answer from one thread and from two, bit for bit (the rows are claimed in tiles whose cut depends on
     *  B*T only, and the loss is summed tile by tile in row order, whoever ran each tile). */
    @Test
    void oneAndTwoThreadsAgree() {
        try (Arena arena = Arena.ofConfined()) {
            Inputs in = new Inputs(Inputs.Spec.of(3, 9, 5003, DType.BF16, 61), arena);
            Inputs.Outputs a = new Inputs.Outputs(in, DType.F32, arena), b = new Inputs.Outputs(in, DType.F32, arena);
            FusedDistillLoss loss = FusedDistillLoss.create(LossConfig.defaults(), Backend.CPU);
            double l1, l2;
            try (FusedDistillLoss.Batch x = loss.newBatch(in.B, in.T, in.V)) {
                x.student(in.student, in.dtype).dpo(in.dpo, in.dtype).second(in.second, in.dtype).mask(in.mask).grad(a.grad, DType.F32).threads(1);
                l1 = x.run();
                x.grad(b.grad, DType.F32).threads(2);
                l2 = x.run();
            }
            assertEquals(l1, l2, 0.0, "loss, 1 vs 2 threads");
            for (long i = 0; i < a.n; i++) assertEquals(a.grad(i), b.grad(i), 0.0f, "element " + i);
        }
    }

    /** Several Java threads, each with its own Batch, calling at once: every result is the single-thread one. */
    @Test
    void concurrentCallersGetTheirOwnResults() throws Exception {
        try (Arena arena = Arena.ofShared()) {
            List<Inputs> ins = new ArrayList<>();
            List<Double> want = new ArrayList<>();
            FusedDistillLoss loss = FusedDistillLoss.create(LossConfig.defaults(), Backend.CPU);
            for (int k = 0; k < 4; k++) {
                Inputs in = new Inputs(Inputs.Spec.of(2, 5, 2000 + 17 * k, DType.F32, 70 + k), arena);
                ins.add(in);
                want.add(in.run(FusedDistillLoss.create(LossConfig.defaults(), Backend.REFERENCE), new Inputs.Outputs(in, DType.F32, arena), false, 0));
            }
            ExecutorService pool = Executors.newFixedThreadPool(4);
            try {
                List<Future<Double>> got = new ArrayList<>();
                for (int k = 0; k < 4; k++) {
                    Inputs in = ins.get(k);
                    got.add(pool.submit(() -> {
                        double last = 0;
                        try (Arena local = Arena.ofConfined(); FusedDistillLoss.Batch b = loss.newBatch(in.B, in.T, in.V)) {
                            Inputs.Outputs out = new Inputs.Outputs(in, DType.F32, local);
                            b.student(in.student, in.dtype).dpo(in.dpo, in.dtype).second(in.second, in.dtype).mask(in.mask).grad(out.grad, DType.F32);
                            for (int rep = 0; rep < 20; rep++) last = b.run();
                        }
                        return last;
                    }));
                }
                for (int k = 0; k < 4; k++) Compare.scalar("caller " + k, got.get(k).get(), want.get(k), 1e-5);
            } finally {
                pool.shutdownNow();
            }
        }
    }

    /** After warm-up a call allocates nothing on the Java heap (measured with the thread's allocation counter). */
    @Test
    void hotPathAllocatesNothing() {
        com.sun.management.ThreadMXBean mx = (com.sun.management.ThreadMXBean) java.lang.management.ManagementFactory.getThreadMXBean();
        try (Arena arena = Arena.ofConfined()) {
            Inputs in = new Inputs(Inputs.Spec.of(1, 2, 8, DType.F32, 3), arena);
            Inputs.Outputs out = new Inputs.Outputs(in, DType.F32, arena);
            FusedDistillLoss loss = FusedDistillLoss.create(LossConfig.defaults(), Backend.CPU);
            try (FusedDistillLoss.Batch b = loss.newBatch(in.B, in.T, in.V)) {
                b.student(in.student, in.dtype).dpo(in.dpo, in.dtype).second(in.second, in.dtype).mask(in.mask)
                        .grad(out.grad, DType.F32).weights(out.weight).tokenLosses(out.tokenLoss).threads(1);
                double sink = 0;
                for (int i = 0; i < 200_000; i++) sink += b.run(); // warm up: JIT-compile run() and the downcall
                long tid = Thread.currentThread().threadId();
                long before = mx.getThreadAllocatedBytes(tid);
                for (int i = 0; i < 10_000; i++) sink += b.run();
                long after = mx.getThreadAllocatedBytes(tid);
                assertTrue(Double.isFinite(sink));
                // The counter itself may allocate a few bytes; 10,000 calls allocating anything would show thousands.
                assertTrue(after - before < 1024, "10,000 calls allocated " + (after - before) + " bytes");
            }
        }
    }

    @AfterAll
    static void restoreIsa() { NativeCpu.forceIsa("auto"); }
}
