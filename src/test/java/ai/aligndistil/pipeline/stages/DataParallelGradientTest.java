package ai.aligndistil.pipeline.stages;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.net.InetAddress;
import java.net.ServerSocket;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;

import ai.aligndistil.kernel.FusedDistillLoss;
import ai.aligndistil.kernel.LossConfig;
import ai.aligndistil.kernel.Variant;
import ai.aligndistil.model.CausalLM;
import ai.aligndistil.model.ChatTemplate;
import ai.aligndistil.model.Tensors;
import ai.aligndistil.model.TinyModels;
import ai.aligndistil.pipeline.data.Seqs;
import ai.aligndistil.train.dist.DistEnv;
import ai.aligndistil.train.dist.DistGroup;
import ai.aligndistil.train.dist.GradSync;
import ai.aligndistil.train.dist.ReducerSync;

/**
 * On-policy distillation's gradient on a fixed rollout batch, data parallel: two ranks (threads of this JVM, one Gloo
 * group over a loopback TCPStore) each take half of the batch, divide their loss by the global batch and sum their
 * gradients; the result equals the single-process gradient of the whole batch up to summation order. (Sampling differs
 * between world sizes by design, so the on-policy runs themselves are not compared step by step.)
 */
class DataParallelGradientTest {
    static final int V = 37, BATCH = 8, MICRO = 2;

    @Test
    void twoRanksSumToTheSingleProcessGradient() throws Exception {
        check(false);
    }

    /** The same through libtorch's DDP Reducer (one micro-batch per rank: its bucket all-reduces overlap backward). */
    @Test
    void theReducerOnOneMicroBatchPerRankGivesTheSingleProcessGradient() throws Exception {
        check(true);
    }

    static void check(boolean reducer) throws Exception {
        LossConfig cfg = new LossConfig(Variant.ALIGNDISTIL, 0.1, 15, 1e-3, 1, 1, true);
        Seqs.Positions pos = Seqs.Positions.parse("paper", true);
        List<long[]> prompts = new ArrayList<>();
        for (int i = 0; i < BATCH; i++) prompts.add(new long[] {1, 5 + i, 9, 10 + (i % 3), 2, 1, 6});
        List<ChatTemplate.Example> rollout = Sampler.sample(models()[0], prompts, 8, 1.0, 1.0, 99, 2, 0, 64);

        // the same micro-batches as the ranks (their packing, hence their padding, is then the same)
        Result one = run(rollout, 0, 1, cfg, pos, DistGroup.single(), reducer ? BATCH / 2 : MICRO, false);
        int port;
        try (ServerSocket s = new ServerSocket(0, 0, InetAddress.getLoopbackAddress())) {
            port = s.getLocalPort();
        }
        ExecutorService ex = Executors.newFixedThreadPool(2);
        List<Future<Result>> fs = new ArrayList<>();
        for (int r = 0; r < 2; r++) {
            int rank = r;
            fs.add(ex.submit(() -> {
                try (DistGroup g = DistGroup.join(new DistEnv(2, rank, rank, "127.0.0.1", port), Duration.ofSeconds(60), DistGroup.Kind.GLOO)) {
                    Result res = run(rollout, rank, 2, cfg, pos, g, reducer ? BATCH / 2 : MICRO, reducer);
                    return res;
                }
            }));
        }
        List<Result> ranks = new ArrayList<>();
        for (Future<Result> f : fs) ranks.add(f.get());
        ex.shutdown();

        for (Result two : ranks) {
            assertEquals(one.loss, two.loss, 1e-6 * Math.abs(one.loss), "the loss summed over ranks is the single-process loss");
            String worst = null;
            double worstRel = 0;
            for (String k : one.grads.keySet()) {
                float[] a = one.grads.get(k), b = two.grads.get(k);
                double d = 0, n = 0;
                for (int i = 0; i < a.length; i++) {
                    d += (a[i] - (double) b[i]) * (a[i] - (double) b[i]);
                    n += (double) a[i] * a[i];
                }
                double rel = Math.sqrt(d) / Math.max(Math.sqrt(n), 1e-30);
                if (rel > worstRel) {
                    worstRel = rel;
                    worst = k;
                }
            }
            // f32 gradients summed in another order: relative L2 difference per tensor <= 1e-5
            assertTrue(worstRel <= 1e-5, "worst parameter " + worst + ": relative L2 difference " + worstRel);
        }
        for (String k : one.grads.keySet())
            assertTrue(java.util.Arrays.equals(ranks.get(0).grads.get(k), ranks.get(1).grads.get(k)), "both ranks hold the same gradient of " + k);
    }

    record Result(double loss, Map<String, float[]> grads) {}

    /**
     * Student, DPO and reverse-DPO models: the same seeded random weights in every thread. Synchronized: the weights are
     * drawn from libtorch's global generator, which two ranks that are threads of one JVM would otherwise interleave.
     */
    static synchronized CausalLM[] models() {
        return new CausalLM[] {TinyModels.random(TinyModels.qwen2(V, 2), 1, ScalarType.Float),
                TinyModels.random(TinyModels.qwen2(V, 2), 2, ScalarType.Float).freeze(),
                TinyModels.random(TinyModels.qwen2(V, 2), 3, ScalarType.Float).freeze()};
    }

    static Result run(List<ChatTemplate.Example> rollout, int rank, int world, LossConfig cfg, Seqs.Positions pos) {
        return run(rollout, rank, world, cfg, pos, DistGroup.single());
    }

    static Result run(List<ChatTemplate.Example> rollout, int rank, int world, LossConfig cfg, Seqs.Positions pos, DistGroup g) {
        return run(rollout, rank, world, cfg, pos, g, MICRO, false);
    }

    @SuppressWarnings("try")
    static Result run(List<ChatTemplate.Example> rollout, int rank, int world, LossConfig cfg, Seqs.Positions pos, DistGroup g, int micro, boolean reducer) {
        CausalLM[] m = models();
        FusedDistillLoss fused = FusedDistillLoss.create(cfg);
        int[] order = new int[BATCH];
        for (int i = 0; i < BATCH; i++) order[i] = i;
        Map<String, float[]> grads = new LinkedHashMap<>();
        double loss = 0;
        try (PointerScope s = new PointerScope()) {
            m[0].zeroGrad();
            DistillStage.Sums sums = new DistillStage.Sums();
            ReducerSync rs = reducer ? new ReducerSync(g, m[0].namedParameters().values(), 1 << 10) : null; // small buckets: several
            List<int[]> micros = Stage.shard(order, 0, BATCH, micro, rank, world);
            if (rs != null) assertEquals(1, micros.size(), "the Reducer serves one micro-batch per rank");
            for (int[] mb : micros) {
                List<ChatTemplate.Example> part = new ArrayList<>();
                for (int i : mb) part.add(rollout.get(i));
                if (rs != null) rs.prepare();
                DistillStage.microStep(fused, m[0], m[1], m[2], Seqs.pack(part, 0), pos, BATCH, sums);
            }
            if (rs != null) rs.finish();
            else new GradSync(g, m[0].namedParameters().values(), 1 << 10).allReduce(); // small buckets: several in flight
            loss = g.allReduceSum(new double[] {sums.loss}, "loss")[0];
            for (var e : m[0].namedParameters().entrySet()) grads.put(e.getKey(), Tensors.toFloats(e.getValue().grad()));
        }
        return new Result(loss, grads);
    }
}
