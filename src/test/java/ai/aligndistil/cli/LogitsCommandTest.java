package ai.aligndistil.cli;

import ai.aligndistil.io.DType;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import ai.aligndistil.io.Safetensors;
import ai.aligndistil.model.CausalLMTest;
import ai.aligndistil.model.HfCheckpoint;
import ai.aligndistil.model.TinyModels;

class LogitsCommandTest {
    static final int V = 300;

    @TempDir Path tmp;

    record Outcome(int code, String out, String err) {}

    static Outcome run(String... args) {
        ByteArrayOutputStream o = new ByteArrayOutputStream(), e = new ByteArrayOutputStream();
        int code = LogitsCommand.run(args, new PrintStream(o, true, StandardCharsets.UTF_8), new PrintStream(e, true, StandardCharsets.UTF_8));
        return new Outcome(code, o.toString(StandardCharsets.UTF_8), e.toString(StandardCharsets.UTF_8));
    }

    static float[] read(Path f, long t) throws IOException {
        try (Safetensors.Reader r = Safetensors.open(f)) {
            assertEquals(DType.F32, r.info("logits").dtype());
            assertArrayEquals(new long[] {t, V}, r.info("logits").shape());
            return r.readFloats("logits");
        }
    }

    @Test
    void idsAndTextPathsWriteTheModelsLogits() throws IOException {
        Path dir = TinyModels.write(tmp.resolve("model"), TinyModels.qwen2(V, 2), 31);
        Path out = tmp.resolve("ids.safetensors");
        Outcome r = run("--model", dir.toString(), "--ids", "24,25,7", "--out", out.toString());
        assertEquals(0, r.code(), r.err());
        float[] got = read(out, 3);
        float[] want = CausalLMTest.logits(HfCheckpoint.load(dir), new long[][] {{24, 25, 7}}, null)[0];
        assertArrayEquals(want, got, 1e-6f);

        TinyModels.writeTokenizer(dir);
        Path text = tmp.resolve("text.safetensors");
        assertEquals(0, run("--model", dir.toString(), "--text", "hello world", "--out", text.toString()).code());
        Path ids2 = tmp.resolve("ids2.safetensors");
        assertEquals(0, run("--model", dir.toString(), "--ids", "24,25", "--out", ids2.toString()).code());
        assertArrayEquals(read(ids2, 2), read(text, 2));

        Path bf = tmp.resolve("bf16.safetensors");
        assertEquals(0, run("--model", dir.toString(), "--ids", "24,25,7", "--out", bf.toString(), "--dtype", "bf16").code());
        float[] b = read(bf, 3);
        double err = 0, max = 0;
        for (int i = 0; i < b.length; i++) {
            err = Math.max(err, Math.abs(b[i] - want[i]));
            max = Math.max(max, Math.abs(want[i]));
        }
        assertTrue(err < 0.05 * max + 0.05, "bf16 error " + err);
    }

    @Test
    void errorsAreOneLineWithTheRightCodeAndLeaveNoFile() throws IOException {
        Path dir = TinyModels.write(tmp.resolve("model"), TinyModels.qwen2(V, 1), 32);
        Path out = tmp.resolve("out.safetensors");
        String m = dir.toString(), o = out.toString();
        Outcome[] usage = {
                run("--model", m, "--ids", "1,2"),
                run("--model", m, "--ids", "1,x", "--out", o),
                run("--model", m, "--ids", "1", "--text", "hi", "--out", o),
                run("--model", m, "--ids", "1", "--out", o, "--dtype", "f64"),
                run("--model", m, "--bogus", "1", "--out", o),
                run("--model")};
        for (Outcome u : usage) {
            assertEquals(2, u.code(), u.err());
            assertTrue(u.err().strip().lines().count() <= 2, "at most two lines: " + u.err());
        }
        Outcome noTok = run("--model", m, "--text", "hello", "--out", o);
        assertEquals(1, noTok.code());
        assertTrue(noTok.err().contains("no tokenizer.json"), noTok.err());
        Outcome range = run("--model", m, "--ids", "1,300", "--out", o);
        assertEquals(1, range.code());
        assertTrue(range.err().contains("token id 300"), range.err());
        Files.delete(dir.resolve("model.safetensors"));
        Outcome missing = run("--model", m, "--ids", "1,2", "--out", o);
        assertEquals(1, missing.code());
        assertEquals(1, missing.err().strip().lines().count(), missing.err());
        assertTrue(missing.err().contains("model.safetensors"), missing.err());
        assertFalse(Files.exists(out));
        try (var files = Files.list(tmp)) {
            assertTrue(files.noneMatch(p -> p.getFileName().toString().startsWith(".out")), "no temporary file left");
        }
    }
}
