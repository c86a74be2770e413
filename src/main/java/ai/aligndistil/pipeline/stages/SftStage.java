package ai.aligndistil.pipeline.stages;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import org.bytedeco.pytorch.Tensor;

import ai.aligndistil.kernel.Nvtx;
import ai.aligndistil.model.CausalLM;
import ai.aligndistil.model.ChatTemplate;
import ai.aligndistil.pipeline.task.BuiltinTask;
import ai.aligndistil.pipeline.config.Options;
import ai.aligndistil.pipeline.data.DataFiles;
import ai.aligndistil.pipeline.data.Seqs;
import ai.aligndistil.pipeline.profiling.StepRanges;
import ai.aligndistil.train.dist.DistGroup;

/**
 * {@code sft}: supervised fine-tuning on prompt/response data. The loss is the mean negative log-likelihood of
 * the response tokens (EOS included) over all response tokens of the optimiser batch, whatever the
 * micro-batching. For the built-in task it turns the randomly initialised base model into the initial policy.
 */
public final class SftStage {
    private SftStage() {}

    public static Options.Spec spec() { return Stage.common("sft"); }

    /** Runs the stage; returns the output folder (a model folder). */
    public static Path run(Options o, PrintStream err) throws IOException {
        return run(o, err, DistGroup.single());
    }

    /** Runs as one rank of {@code dist}: this rank's shard of every global batch, gradients and metrics summed across ranks. */
    public static Path run(Options o, PrintStream err, DistGroup dist) throws IOException {
        Path modelDir = o.path("model"), out = o.path("out");
        Stage.preflight(o, modelDir, o.integer("micro-batch"), 0, ai.aligndistil.model.MemoryPlan.Kind.LOGPROB, 0, err);
        Stage.Text text = Stage.Text.of(modelDir, o);
        DataFiles.Loaded<DataFiles.Sft> data = DataFiles.sft(o.path("data"), o.bool("skip-bad-lines"));
        DataFiles.Counts counts = new DataFiles.Counts();
        List<ChatTemplate.Example> ex = DataFiles.tokenizeSft(data.records(), text.tpl(), text.tok(), o.integer("max-len"), counts);
        Stage.report(err, "sft", o.str("data"), data, counts);
        CausalLM policy = Stage.load(modelDir, o);
        int batch = o.integer("batch"), micro = o.integer("micro-batch");
        Stage.requireDivisible(batch, dist.worldSize());
        int[] order = Stage.order(ex.size(), o.integer("epochs"), o.longValue("seed"));
        TrainLoop loop = new TrainLoop("sft", out, policy, modelDir, o, Stage.steps(ex.size(), o.integer("epochs"), batch), err).parallel(dist);
        if (o.integer("eval-every") > 0 && o.has("eval-prompts")) {
            BuiltinTask task = o.has("task") ? BuiltinTask.load(o.path("task")) : null;
            PromptSet ps = PromptSet.load(o.path("eval-prompts"), text, o.integer("prompt-max-len"), task, true, err).first(o.integer("curve-prompts"));
            loop.curve(PromptSet.curve(ps, task, null, null, o.integer("generate-max-len"), o.integer("min-new-tokens"), text.eos(), text.pad(), o.longValue("seed"), dist));
        }
        loop.run(step -> {
            long tokens = 0; // response tokens of the whole global batch: the divisor of every rank's loss
            for (int[] mb : Stage.microBatches(order, step, batch, micro)) for (int i : mb) tokens += ex.get(i).ids().length - ex.get(i).promptLength();
            double loss = 0;
            for (int[] mb : Stage.shard(order, step, batch, micro, dist.rank(), dist.worldSize())) {
                List<ChatTemplate.Example> part = new ArrayList<>();
                for (int i : mb) part.add(ex.get(i));
                Seqs.Packed p = Seqs.pack(part, text.pad());
                StepRanges.SFT.forwardStudent.push(); // NVTX sft/*: push/pop pairs, as in DistillStage
                Tensor lp = Seqs.responseLogProbs(policy.forward(p.ids()), p);
                Nvtx.pop();
                StepRanges.SFT.loss.push();
                Tensor l = lp.sum().neg().div(ai.aligndistil.model.Tensors.scalar(tokens));
                Nvtx.pop();
                StepRanges.SFT.backward.push();
                l.backward();
                policy.finishBackward();
                Nvtx.pop();
                loss += l.item_double();
            }
            Map<String, Object> m = new LinkedHashMap<>();
            m.put("loss", dist.allReduceSum(new double[] {loss}, "all-reduce of the metrics")[0]);
            m.put("tokens", tokens);
            return m;
        });
        return out;
    }
}
