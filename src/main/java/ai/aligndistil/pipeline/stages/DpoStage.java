package ai.aligndistil.pipeline.stages;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;

import ai.aligndistil.kernel.Nvtx;
import ai.aligndistil.model.CausalLM;
import ai.aligndistil.model.ChatTemplate;
import ai.aligndistil.model.Tensors;
import ai.aligndistil.pipeline.task.BuiltinTask;
import ai.aligndistil.pipeline.config.Options;
import ai.aligndistil.pipeline.data.DataFiles;
import ai.aligndistil.pipeline.data.Seqs;
import ai.aligndistil.pipeline.profiling.StepRanges;
import ai.aligndistil.train.dist.DistGroup;

/**
 * {@code dpo} and {@code dpo --reverse}: standard sigmoid DPO (spec 6.1) against a frozen reference (the
 * initial model unless {@code --ref} names another):
 * {@code L = -log sigmoid(beta [(log pi(y_w) - log ref(y_w)) - (log pi(y_l) - log ref(y_l))])}, mean over the
 * optimiser batch of pairs, log-probabilities summed over the response tokens (EOS included). Chosen and
 * rejected of a micro-batch go through the model in one right-padded batch. {@code --reverse} swaps chosen and
 * rejected, which makes the reverse DPO model.
 */
public final class DpoStage {
    private DpoStage() {}

    public static Options.Spec spec() {
        return Stage.common("dpo")
                .value("ref", null, "the frozen reference model folder (default: --model)")
                .value("beta", 0.1, "DPO beta (official: 0.1)")
                .flag("reverse", false, "reverse DPO: swap chosen and rejected (the second teacher of aligndistil)");
    }

    /** The DPO loss of per-sequence log-probabilities (float [n] each); returns the per-pair losses. */
    public static Tensor loss(Tensor policyChosen, Tensor policyRejected, Tensor refChosen, Tensor refRejected, double beta) {
        Tensor z = policyChosen.sub(refChosen).sub(policyRejected.sub(refRejected)).mul(Tensors.scalar(beta));
        return torch.log_sigmoid(z).neg();
    }

    public static Path run(Options o, PrintStream err) throws IOException {
        return run(o, err, DistGroup.single());
    }

    /** Runs as one rank of {@code dist}: this rank's shard of every global batch, gradients and metrics summed across ranks. */
    public static Path run(Options o, PrintStream err, DistGroup dist) throws IOException {
        Path modelDir = o.path("model"), out = o.path("out");
        boolean reverse = o.bool("reverse");
        Stage.preflight(o, modelDir, 2L * o.integer("micro-batch"), 1, ai.aligndistil.model.MemoryPlan.Kind.LOGPROB, 0, err);
        String name = reverse ? "dpo-rev" : "dpo";
        Stage.Text text = Stage.Text.of(modelDir, o);
        DataFiles.Loaded<DataFiles.Pair> data = DataFiles.pairs(o.path("data"), o.bool("skip-bad-lines"));
        List<DataFiles.Pair> pairs = data.records();
        if (reverse) pairs = pairs.stream().map(DataFiles.Pair::swapped).toList();
        DataFiles.Counts counts = new DataFiles.Counts();
        List<DataFiles.TokenPair> tp = DataFiles.tokenizePairs(pairs, text.tpl(), text.tok(), o.integer("max-len"), counts);
        Stage.report(err, name, o.str("data"), data, counts);
        CausalLM policy = Stage.load(modelDir, o);
        CausalLM ref = Stage.loadFrozen(o.has("ref") ? o.path("ref") : modelDir, o);
        double beta = o.num("beta");
        int batch = o.integer("batch"), micro = o.integer("micro-batch");
        Stage.requireDivisible(batch, dist.worldSize());
        int[] order = Stage.order(tp.size(), o.integer("epochs"), o.longValue("seed"));
        TrainLoop loop = new TrainLoop(name, out, policy, modelDir, o, Stage.steps(tp.size(), o.integer("epochs"), batch), err).parallel(dist);
        if (o.integer("eval-every") > 0 && o.has("eval-prompts")) {
            BuiltinTask task = o.has("task") ? BuiltinTask.load(o.path("task")) : null;
            PromptSet ps = PromptSet.load(o.path("eval-prompts"), text, o.integer("prompt-max-len"), task, true, err).first(o.integer("curve-prompts"));
            loop.curve(PromptSet.curve(ps, task, ref, null, o.integer("generate-max-len"), o.integer("min-new-tokens"), text.eos(), text.pad(), o.longValue("seed"), dist));
        }
        loop.run(step -> {
            double loss = 0, acc = 0, rc = 0, rr = 0;
            for (int[] mb : Stage.shard(order, step, batch, micro, dist.rank(), dist.worldSize())) {
                List<ChatTemplate.Example> seqs = new ArrayList<>();
                for (int i : mb) seqs.add(tp.get(i).chosen());
                for (int i : mb) seqs.add(tp.get(i).rejected());
                Seqs.Packed p = Seqs.pack(seqs, text.pad());
                int n = mb.length;
                StepRanges.DPO.forwardTeachers.push(); // NVTX dpo/*: push/pop pairs, as in DistillStage
                float[] refLp = Tensors.toFloats(Seqs.responseLogProbs(ref.forwardInference(p.ids(), null), p));
                Nvtx.pop();
                Tensor refT = Tensors.onDevice(Tensors.fromFloats(refLp, 2L * n), policy.device()); // 2n floats, not logits
                StepRanges.DPO.forwardStudent.push();
                Tensor lp = Seqs.responseLogProbs(policy.forward(p.ids()), p);
                Nvtx.pop();
                StepRanges.DPO.loss.push();
                Tensor per = loss(lp.narrow(0, 0, n), lp.narrow(0, n, n), refT.narrow(0, 0, n), refT.narrow(0, n, n), beta);
                Tensor total = per.sum().div(Tensors.scalar(batch));
                Nvtx.pop();
                StepRanges.DPO.backward.push();
                total.backward();
                policy.finishBackward();
                Nvtx.pop();
                float[] l = Tensors.toFloats(per);
                float[] pl = Tensors.toFloats(lp);
                for (int i = 0; i < n; i++) {
                    loss += l[i] / batch;
                    double c = beta * (pl[i] - refLp[i]), r = beta * (pl[n + i] - refLp[n + i]);
                    rc += c / batch;
                    rr += r / batch;
                    if (c > r) acc += 1.0 / batch;
                }
            }
            double[] sum = dist.allReduceSum(new double[] {loss, acc, rc, rr}, "all-reduce of the metrics"); // each rank's part of the batch means
            Map<String, Object> m = new LinkedHashMap<>();
            m.put("loss", sum[0]);
            m.put("acc", sum[1]);
            m.put("chosen_reward", sum[2]);
            m.put("rejected_reward", sum[3]);
            m.put("margin", sum[2] - sum[3]);
            return m;
        });
        return out;
    }
}
