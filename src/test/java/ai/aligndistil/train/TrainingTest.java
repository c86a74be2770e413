package ai.aligndistil.train;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import ai.aligndistil.io.Safetensors;
import ai.aligndistil.model.CausalLM;
import ai.aligndistil.model.Tensors;
import ai.aligndistil.model.TinyModels;

@SuppressWarnings("try")
class TrainingTest {
    static final int V = 64, SEQS = 4, LEN = 12, STEPS = 40, MICRO = 2;

    @TempDir Path tmp;

    /** Fixed random sequences to memorise. */
    static long[][] data() {
        Rng r = new Rng(99);
        long[][] d = new long[SEQS][LEN];
        for (long[] row : d) for (int i = 0; i < LEN; i++) row[i] = 3 + r.nextInt(V - 3);
        return d;
    }

    /** A small run: each step shuffles the sequences with the run's Rng and accumulates MICRO micro-batches. */
    static final class Run {
        final CausalLM model;
        final AdamW opt;
        final Rng rng = new Rng(7);
        final LrSchedule schedule = LrSchedule.spec(1e-2, STEPS);
        final long[][] data = data();
        long step, dataPosition;

        Run(long initSeed) {
            model = TinyModels.random(TinyModels.qwen2(V, 2), initSeed, ScalarType.Float);
            opt = new AdamW(model.namedParameters(), AdamW.Options.spec().withWeightDecay(0.01));
        }

        double step() {
            double total = 0;
            try (PointerScope s = new PointerScope()) {
                opt.zeroGrad();
                int[] order = {0, 1, 2, 3};
                rng.shuffle(order);
                int per = SEQS / MICRO;
                for (int m = 0; m < MICRO; m++) {
                    long[][] rows = new long[per][];
                    for (int i = 0; i < per; i++) rows[i] = data[order[m * per + i]];
                    Tensor ids = Tensors.longs(rows);
                    Tensor logits = model.forward(ids.narrow(1, 0, LEN - 1));
                    Tensor loss = torch.cross_entropy_loss(logits.reshape(-1, V), ids.narrow(1, 1, LEN - 1).reshape(-1));
                    loss.div(Tensors.scalar(MICRO)).backward();
                    total += loss.item_double() / MICRO;
                    dataPosition += per;
                }
                GradClip.clip(model.namedParameters().values(), 1.0);
                opt.step(schedule.lr(step));
                step++;
            }
            return total;
        }

        TrainCheckpoint.State state() { return new TrainCheckpoint.State(step, dataPosition, rng.state(), Map.of("note", "test")); }

        void restore(TrainCheckpoint.State s) {
            step = s.step();
            dataPosition = s.dataPosition();
            rng.setState(s.rngState());
        }
    }

    @Test
    void memorisesAndResumesExactly() throws IOException {
        Run full = new Run(1);
        double[] losses = new double[STEPS];
        for (int i = 0; i < STEPS; i++) losses[i] = full.step();
        assertTrue(losses[STEPS - 1] < 0.25 * losses[0], "loss " + losses[0] + " -> " + losses[STEPS - 1]);

        Run first = new Run(1);
        for (int i = 0; i < STEPS / 2; i++) assertEquals(losses[i], first.step(), 0.0, "same seed, same trajectory");
        Path ck = tmp.resolve("ck.safetensors");
        TrainCheckpoint.save(ck, first.model.namedParameters(), first.opt, first.state());

        Run resumed = new Run(12345);   // different initial weights: everything must come from the checkpoint
        TrainCheckpoint.State s = TrainCheckpoint.load(ck, resumed.model.namedParameters(), resumed.opt);
        assertEquals(STEPS / 2, s.step());
        assertEquals("test", s.extra().get("note"));
        resumed.restore(s);
        for (int i = STEPS / 2; i < STEPS; i++) assertEquals(losses[i], resumed.step(), 1e-6, "step " + i);
    }

    @Test
    void truncatedOrCorruptedCheckpointIsRefused() throws IOException {
        Run run = new Run(2);
        run.step();
        Path ck = tmp.resolve("ck.safetensors");
        TrainCheckpoint.save(ck, run.model.namedParameters(), run.opt, run.state());
        byte[] good = Files.readAllBytes(ck);

        Path corrupt = tmp.resolve("corrupt.safetensors");
        byte[] bad = good.clone();
        bad[bad.length - 100] ^= 0x10;
        Files.write(corrupt, bad);
        Run other = new Run(3);
        float[] before = Tensors.toFloats(other.model.namedParameters().get("model.norm.weight"));
        var e = assertThrows(TrainCheckpoint.CorruptCheckpointException.class,
                () -> TrainCheckpoint.load(corrupt, other.model.namedParameters(), other.opt));
        assertTrue(e.getMessage().contains("checksum mismatch"), e.getMessage());
        assertArrayEquals(before, Tensors.toFloats(other.model.namedParameters().get("model.norm.weight")), "nothing loaded");

        Path truncated = tmp.resolve("truncated.safetensors");
        Files.write(truncated, Arrays.copyOf(good, good.length / 2));
        var t = assertThrows(Safetensors.SafetensorsException.class,
                () -> TrainCheckpoint.load(truncated, other.model.namedParameters(), other.opt));
        assertTrue(t.getMessage().contains("truncated"), t.getMessage());

        // A crash mid-write leaves only a hidden temporary file, never a half file under the name.
        try (var files = Files.list(tmp)) {
            assertTrue(files.noneMatch(p -> p.getFileName().toString().contains(".tmp-")));
        }
    }

    @Test
    void scheduleFollowsTheSpec() {
        LrSchedule s = LrSchedule.spec(1e-6, 100);
        assertEquals(10, s.warmupSteps());
        assertEquals(0.0, s.lr(0));
        assertEquals(0.5e-6, s.lr(5), 1e-18);
        assertEquals(1e-6, s.lr(10), 1e-18);
        assertEquals(0.55e-6, s.lr(55), 1e-15);
        assertEquals(1e-7, s.lr(100), 1e-18);
        assertTrue(s.lr(99) > 1e-7 && s.lr(99) < 1.01e-7);
        for (int i = 11; i < 100; i++) assertTrue(s.lr(i) <= s.lr(i - 1));
    }

    @Test
    void adamWMatchesTheClosedFormFirstStep() {
        // After one step from zero state the update is -lr * g / (|g| + eps') elementwise (bias correction).
        Tensor p = Tensors.fromFloats(new float[] {1f, -2f, 3f}, 3).requires_grad_(true);
        AdamW opt = new AdamW(Map.of("w", p), AdamW.Options.spec());
        try (PointerScope s = new PointerScope()) {
            p.mul(Tensors.fromFloats(new float[] {0.5f, -1f, 2f}, 3)).sum().backward();
            opt.step(0.1);
        }
        float[] got = Tensors.toFloats(p);
        assertEquals(1f - 0.1f, got[0], 1e-6);
        assertEquals(-2f + 0.1f, got[1], 1e-6);
        assertEquals(3f - 0.1f, got[2], 1e-6);
    }

    @Test
    void gradClipScalesToTheMaxNorm() {
        Tensor a = Tensors.fromFloats(new float[] {3f, 0f}, 2).requires_grad_(true);
        Tensor b = Tensors.fromFloats(new float[] {0f, 4f}, 2).requires_grad_(true);
        try (PointerScope s = new PointerScope()) {
            a.mul(a).sum().div(Tensors.scalar(2)).add(b.mul(b).sum().div(Tensors.scalar(2))).backward();
        }
        double n = GradClip.clip(List.of(a, b), 1.0);
        assertEquals(5.0, n, 1e-6);
        assertEquals(1.0, GradClip.globalNorm(List.of(a, b)), 1e-5);
    }

    @Test
    void nativeMemoryStaysFlatOverManySteps() {
        Run run = new Run(4);
        List<Long> rss = new ArrayList<>();
        for (int i = 0; i < 300; i++) {
            run.step();
            if (i == 49 || i == 299) rss.add(rssKb());
        }
        long growthMb = (rss.get(1) - rss.get(0)) / 1024;
        assertTrue(growthMb < 40, "RSS grew " + growthMb + " MB between step 50 and 300: " + rss);
    }

    static long rssKb() {
        try {
            for (String line : Files.readAllLines(Path.of("/proc/self/status")))
                if (line.startsWith("VmRSS:")) return Long.parseLong(line.replaceAll("[^0-9]", ""));
        } catch (IOException e) {
            throw new RuntimeException(e);
        }
        throw new IllegalStateException("no VmRSS");
    }

}
