package ai.aligndistil.pipeline.stages;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import ai.aligndistil.io.Json;
import ai.aligndistil.model.Tensors;
import ai.aligndistil.model.TorchRuntime;
import ai.aligndistil.pipeline.data.JsonLines;

class DpoTest {
    @TempDir Path tmp;

    @Test
    void lossAndGradientMatchAHandComputedCase() {
        TorchRuntime.init();
        try (PointerScope s = new PointerScope()) {
            // Two pairs; beta 0.1. z = beta * ((pc - rc) - (pr - rr)).
            Tensor pc = Tensors.fromFloats(new float[] {-3.0f, -10.0f}, 2).requires_grad_(true);
            Tensor pr = Tensors.fromFloats(new float[] {-5.0f, -4.0f}, 2).requires_grad_(true);
            Tensor rc = Tensors.fromFloats(new float[] {-4.0f, -9.0f}, 2);
            Tensor rr = Tensors.fromFloats(new float[] {-4.5f, -6.0f}, 2);
            Tensor per = DpoStage.loss(pc, pr, rc, rr, 0.1);
            per.sum().backward();
            // pair 0: z = 0.1 * ((1) - (-0.5)) = 0.15 ; pair 1: z = 0.1 * ((-1) - (2)) = -0.3
            double[] z = {0.15, -0.3};
            float[] l = Tensors.toFloats(per), gc = Tensors.toFloats(pc.grad()), gr = Tensors.toFloats(pr.grad());
            for (int i = 0; i < 2; i++) {
                double loss = Math.log1p(Math.exp(-z[i]));          // -log sigmoid(z)
                double sig = 1 / (1 + Math.exp(z[i]));              // sigmoid(-z)
                assertEquals(loss, l[i], 1e-6, "loss of pair " + i);
                assertEquals(-0.1 * sig, gc[i], 1e-6, "d loss / d log pi(chosen)");
                assertEquals(0.1 * sig, gr[i], 1e-6, "d loss / d log pi(rejected)");
            }
            assertEquals(0.6209571, l[0], 1e-6);  // log(1 + e^-0.15) = log(1.8607080)
        }
    }

    @Test
    void reverseDpoEqualsDpoOnSwappedData() throws Exception {
        Path task = Fixture.task(tmp.resolve("task"));
        // The swapped file: chosen and rejected exchanged on every line.
        List<String> swapped = new ArrayList<>();
        for (var j : JsonLines.read(task.resolve("train_prefs.jsonl"))) {
            Object c = j.get("chosen");
            j.put("chosen", j.get("rejected"));
            j.put("rejected", c);
            swapped.add(Json.write(j));
        }
        Path sw = tmp.resolve("swapped.jsonl");
        Files.write(sw, swapped);
        String base = task.resolve("base").toString();
        DpoStage.run(DpoStage.spec().parse(Fixture.common(task, "--model", base, "--out", tmp.resolve("rev").toString(), "--reverse",
                "--data", task.resolve("train_prefs.jsonl").toString())), Fixture.NULL);
        DpoStage.run(DpoStage.spec().parse(Fixture.common(task, "--model", base, "--out", tmp.resolve("sw").toString(),
                "--data", sw.toString())), Fixture.NULL);
        assertArrayEquals(Files.readAllBytes(tmp.resolve("rev/model.safetensors")), Files.readAllBytes(tmp.resolve("sw/model.safetensors")));
        // and the run did change the model
        org.junit.jupiter.api.Assertions.assertFalse(java.util.Arrays.equals(Files.readAllBytes(tmp.resolve("rev/model.safetensors")),
                Files.readAllBytes(task.resolve("base/model.safetensors"))));
    }
}
