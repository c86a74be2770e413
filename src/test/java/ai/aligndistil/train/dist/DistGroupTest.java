package ai.aligndistil.train.dist;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.net.InetAddress;
import java.net.ServerSocket;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.function.IntFunction;

import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;

import ai.aligndistil.model.Tensors;

/**
 * The c10d group in one JVM: two ranks on two threads over a TCPStore on a free loopback port, Gloo between them
 * (the same code paths as two worker processes, at a fraction of the start-up cost).
 */
class DistGroupTest {
    static int freePort() throws Exception {
        try (ServerSocket s = new ServerSocket(0, 0, InetAddress.getLoopbackAddress())) {
            return s.getLocalPort();
        }
    }

    /** Runs {@code body} as ranks 0..world-1 of one Gloo group, each on its own thread; returns their results. */
    static <T> List<T> onRanks(int world, Duration timeout, RankBody<T> body) throws Exception {
        int port = freePort();
        ExecutorService ex = Executors.newFixedThreadPool(world);
        try {
            List<Future<T>> fs = new ArrayList<>();
            for (int r = 0; r < world; r++) {
                int rank = r;
                fs.add(ex.submit((Callable<T>) () -> {
                    try (DistGroup g = DistGroup.join(new DistEnv(world, rank, rank, "127.0.0.1", port), timeout, DistGroup.Kind.GLOO)) {
                        return body.run(g);
                    }
                }));
            }
            List<T> out = new ArrayList<>();
            for (Future<T> f : fs) out.add(f.get());
            return out;
        } finally {
            ex.shutdownNow();
        }
    }

    interface RankBody<T> {
        T run(DistGroup g) throws Exception;
    }

    @Test
    void allReduceSumsAcrossRanksAndRequireSameCatchesADifference() throws Exception {
        List<double[]> r = onRanks(2, Duration.ofSeconds(60), g -> {
            double[] s = g.allReduceSum(new double[] {g.rank() + 1, 10 * (g.rank() + 1), -0.5}, "test");
            g.requireSame("a value all ranks share", "abc");
            assertTrue(g.any(g.rank() == 1, "a stop request on rank 1 only"), "one rank's yes is every rank's yes");
            assertTrue(!g.any(false, "no stop request"));
            DistException e = assertThrows(DistException.class, () -> g.requireSame("the options hash", g.rank() == 0 ? "h0" : "h1"));
            assertTrue(e.usage(), "a difference between ranks is a usage error");
            assertTrue(e.getMessage().contains("rank 0 has h0, rank 1 has h1"), e.getMessage());
            g.barrier("end");
            return s;
        });
        for (double[] s : r) {
            assertEquals(3.0, s[0]);
            assertEquals(30.0, s[1]);
            assertEquals(-1.0, s[2]);
        }
    }

    @Test
    void gradSyncSumsEveryGradientExactlyInSeveralBuckets() throws Exception {
        // Three parameters of 5, 7 and 3 floats; a 32-byte bucket cap splits them over three buckets.
        IntFunction<List<Tensor>> params = rank -> {
            List<Tensor> ps = new ArrayList<>();
            int[] sizes = {5, 7, 3};
            for (int i = 0; i < sizes.length; i++) {
                Tensor p = Tensors.zeros(ScalarType.Float, sizes[i]).requires_grad_(true);
                if (!(rank == 1 && i == 1)) { // rank 1 leaves parameter 1 without a gradient: it counts as zeros
                    float[] gv = new float[sizes[i]];
                    for (int k = 0; k < gv.length; k++) gv[k] = (rank + 1) * (i * 100 + k) + 0.25f;
                    p.mutable_grad().put(Tensors.fromFloats(gv, sizes[i]));
                }
                ps.add(p);
            }
            return ps;
        };
        List<List<float[]>> r = onRanks(2, Duration.ofSeconds(60), g -> {
            List<Tensor> ps = params.apply(g.rank());
            GradSync sync = new GradSync(g, ps, 32);
            assertEquals(3, sync.buckets());
            sync.allReduce();
            List<float[]> out = new ArrayList<>();
            for (Tensor p : ps) out.add(Tensors.toFloats(p.grad()));
            return out;
        });
        int[] sizes = {5, 7, 3};
        for (List<float[]> rank : r) {
            for (int i = 0; i < 3; i++) {
                for (int k = 0; k < sizes[i]; k++) {
                    double expected = (i * 100 + k) + 0.25 + (i == 1 ? 0 : 2 * (i * 100 + k) + 0.25);
                    assertEquals(expected, rank.get(i)[k], 0.0, "parameter " + i + " element " + k);
                }
            }
        }
    }

    @Test
    void aRankThatFailsWithAnExceptionIsNamedWithItsCauseByTheOthers() throws Exception {
        // Rank 1 fails and leaves (in one JVM its sockets stay open, so rank 0's collective ends at the 3 s timeout; a dead
        // process's sockets close and it ends at once, which DataParallelTest's SIGKILL test shows).
        List<String> r = onRanks(2, Duration.ofSeconds(3), g -> {
            if (g.rank() == 1) {
                g.reportFailure(new IllegalStateException("out of memory at step 3"));
                return "failed";
            }
            Thread.sleep(200); // rank 1 has left its cause in the store
            DistException e = assertThrows(DistException.class, () -> g.allReduceSum(new double[] {1}, "all-reduce of the gradients"));
            assertTrue(!e.usage(), "a failure, not a usage error");
            return e.getMessage();
        });
        String msg = r.get(0);
        assertTrue(msg.startsWith("rank 0: all-reduce of the gradients failed"), msg);
        assertTrue(msg.contains("rank 1 failed: out of memory at step 3"), msg);
        assertEquals(1, msg.lines().count(), msg);
    }

    @Test
    void aCollectiveThatARankNeverJoinsFailsWithinTheTimeout() throws Exception {
        List<Double> r = onRanks(2, Duration.ofSeconds(3), g -> {
            if (g.rank() == 1) {
                Thread.sleep(6000); // stuck: never joins the collective
                return 0.0;
            }
            long t0 = System.nanoTime();
            DistException e = assertThrows(DistException.class, () -> g.allReduceSum(new double[] {1}, "all-reduce of the gradients"));
            double s = (System.nanoTime() - t0) / 1e9;
            assertTrue(e.getMessage().startsWith("rank 0: all-reduce of the gradients failed"), e.getMessage());
            return s;
        });
        assertTrue(r.get(0) >= 2.5 && r.get(0) < 6, "rank 0 gave up after " + r.get(0) + " s with a 3 s timeout");
    }

    @Test
    void aPortInUseIsAUsageErrorBeforeAnythingStarts() throws Exception {
        try (ServerSocket busy = new ServerSocket(0, 0, InetAddress.getByName("127.0.0.1"))) {
            DistException e = assertThrows(DistException.class,
                    () -> DistGroup.join(new DistEnv(2, 0, 0, "127.0.0.1", busy.getLocalPort()), Duration.ofSeconds(5), DistGroup.Kind.GLOO));
            assertTrue(e.usage());
            assertTrue(e.getMessage().contains("already in use"), e.getMessage());
        }
    }

    @Test
    void theEnvironmentContractIsAllOrNothing() {
        assertEquals(null, DistEnv.fromEnvironment(Map.of()));
        DistEnv e = DistEnv.fromEnvironment(Map.of("WORLD_SIZE", "2", "RANK", "1", "LOCAL_RANK", "1", "MASTER_ADDR", "127.0.0.1", "MASTER_PORT", "29500"));
        assertEquals(new DistEnv(2, 1, 1, "127.0.0.1", 29500), e);
        DistException missing = assertThrows(DistException.class, () -> DistEnv.fromEnvironment(Map.of("WORLD_SIZE", "2", "RANK", "0")));
        assertTrue(missing.getMessage().contains("LOCAL_RANK, MASTER_ADDR, MASTER_PORT"), missing.getMessage());
        assertThrows(DistException.class, () -> DistEnv.fromEnvironment(Map.of("WORLD_SIZE", "2", "RANK", "2", "LOCAL_RANK", "0", "MASTER_ADDR", "h", "MASTER_PORT", "1")));
    }

    @Test
    void rankStreamsDifferByRankAndStepAndRankZeroIsTheSingleProcessStream() {
        assertEquals(42 * 0x9E3779B97F4A7C15L + 3 * 1_000_003L, RankStreams.seed(42, 0, 3));
        assertNotEquals(RankStreams.seed(42, 0, 3), RankStreams.seed(42, 1, 3));
        assertNotEquals(RankStreams.seed(42, 1, 3), RankStreams.seed(42, 1, 4));
        assertNotEquals(RankStreams.seed(42, 1, 3), RankStreams.seed(42, 2, 3));
        assertEquals(RankStreams.seed(42, 1, 3), RankStreams.seed(42, 1, 3));
    }

    @Test
    void ncclOnTheCpuBuildIsAClearUsageError() throws Exception {
        org.junit.jupiter.api.Assumptions.assumeFalse(org.bytedeco.pytorch.global.torch.cuda_is_available(), "a CUDA device is present");
        DistException e = assertThrows(DistException.class,
                () -> DistGroup.join(new DistEnv(1, 0, 0, "127.0.0.1", freePort()), Duration.ofSeconds(5), DistGroup.Kind.NCCL));
        assertTrue(e.usage());
        assertTrue(e.getMessage().contains("NCCL needs CUDA"), e.getMessage());
    }
}
