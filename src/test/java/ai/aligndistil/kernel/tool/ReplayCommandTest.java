package ai.aligndistil.kernel.tool;

import ai.aligndistil.io.DType;
import ai.aligndistil.io.Safetensors;
import ai.aligndistil.kernel.Backend;
import ai.aligndistil.kernel.Backends;
import ai.aligndistil.kernel.Elements;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.lang.foreign.MemorySegment;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * {@code replay} end to end: files in, files out, checked against an independent float64 transcription of the
 * official formulas ({@link OfficialFormulas}). Acceptance bounds of the fused-loss issue: loss, weights and token
 * losses within 1e-5 (relative above 1, absolute below), the gradient within 1e-4 relative L2; ten times looser
 * for bf16 inputs and for logits of magnitude 1e4.
 */
class ReplayCommandTest {
    @TempDir
    Path dir;

    record Run(int code, String out, String err) {}

    static Run main(String... args) {
        ByteArrayOutputStream o = new ByteArrayOutputStream(), e = new ByteArrayOutputStream();
        int code = KernelMain.run(args, new PrintStream(o, true, StandardCharsets.UTF_8), new PrintStream(e, true, StandardCharsets.UTF_8));
        return new Run(code, o.toString(StandardCharsets.UTF_8), e.toString(StandardCharsets.UTF_8));
    }

    /** A batch file of logits offset + 3 N(0,1) (plus model noise); returns the logits as the kernels will see them (after rounding to {@code dtype}). */
    double[][][][] writeBatch(Path f, int B, int T, int V, DType dtype, double offset, boolean[][] mask, String maskDtype, long seed) throws IOException {
        double scale = 3;
        SplittableRandom r = new SplittableRandom(seed);
        double[][][][] z = new double[3][B][T][V];
        int es = dtype.byteSize;
        MemorySegment[] seg = new MemorySegment[3];
        DType kd = dtype == DType.F32 ? DType.F32 : DType.BF16;
        for (int k = 0; k < 3; k++) seg[k] = MemorySegment.ofArray(new byte[B * T * V * es]);
        for (int b = 0; b < B; b++) for (int t = 0; t < T; t++) for (int v = 0; v < V; v++) {
            double base = offset + scale * r.nextGaussian();
            double[] vals = {base + 0.7 * scale * r.nextGaussian() / 3, base + 0.5 * scale * r.nextGaussian() / 3, base + 0.5 * scale * r.nextGaussian() / 3};
            for (int k = 0; k < 3; k++) {
                long i = ((long) b * T + t) * V + v;
                Elements.set(seg[k], kd, i, (float) vals[k]);
                z[k][b][t][v] = Elements.get(seg[k], kd, i);
            }
        }
        Safetensors.Writer w = new Safetensors.Writer()
                .add("student_logits", dtype, new long[] {B, T, V}, seg[0])
                .add("dpo_logits", dtype, new long[] {B, T, V}, seg[1])
                .add("reverse_logits", dtype, new long[] {B, T, V}, seg[2]);
        byte[] mb;
        DType mdt;
        switch (maskDtype) {
            case "i64" -> {
                mdt = DType.I64;
                long[] m = new long[B * T];
                for (int i = 0; i < m.length; i++) m[i] = mask[i / T][i % T] ? 1 : 0;
                w.add("mask", mdt, new long[] {B, T}, MemorySegment.ofArray(m));
            }
            case "f32" -> {
                float[] m = new float[B * T];
                for (int i = 0; i < m.length; i++) m[i] = mask[i / T][i % T] ? 1f : 0f;
                w.add("mask", DType.F32, new long[] {B, T}, MemorySegment.ofArray(m));
            }
            case "i32" -> {
                int[] m = new int[B * T];
                for (int i = 0; i < m.length; i++) m[i] = mask[i / T][i % T] ? 7 : 0;
                w.add("mask", DType.I32, new long[] {B, T}, MemorySegment.ofArray(m));
            }
            default -> {
                mb = new byte[B * T];
                for (int i = 0; i < mb.length; i++) mb[i] = (byte) (mask[i / T][i % T] ? 1 : 0);
                w.add("mask", maskDtype.equals("bool") ? DType.BOOL : DType.U8, new long[] {B, T}, MemorySegment.ofArray(mb));
            }
        }
        w.write(f);
        return z;
    }

    private void check(DType dtype, double offset, String maskDtype, double tolScalar, double tolGrad, String backend) throws IOException {
        int B = 3, T = 6, V = 1537;
        boolean[][] mask = new boolean[B][T];
        for (int t = 2; t < T; t++) mask[0][t] = true;          // prompt of 2
        for (int t = 1; t < T - 2; t++) mask[1][t] = true;      // right padding
        // sequence 2: nothing selected (skipped, not counted)
        Path in = dir.resolve("batch.safetensors"), out = dir.resolve("result.safetensors");
        double[][][][] z = writeBatch(in, B, T, V, dtype, offset, mask, maskDtype, 99);
        Run run = main("replay", "--in", in.toString(), "--out", out.toString(), "--backend", backend);
        assertEquals(0, run.code(), run.err());
        assertTrue(run.out().contains("replay: loss"), run.out());
        OfficialFormulas want = new OfficialFormulas(z[0], z[1], z[2], mask, 0.1, 10, 1, false);
        try (Safetensors.Reader r = Safetensors.open(out)) {
            double loss = r.segment("loss").get(java.lang.foreign.ValueLayout.JAVA_DOUBLE_UNALIGNED, 0);
            assertEquals(0, r.info("loss").shape().length);
            assertTrue(Math.abs(loss - want.loss) <= tolScalar * Math.max(1, Math.abs(want.loss)), "loss " + loss + " vs " + want.loss);
            float[] w = r.readFloats("weight"), tl = r.readFloats("token_loss"), g = r.readFloats("grad_student_logits");
            double num = 0, den = 0;
            for (int b = 0; b < B; b++) for (int t = 0; t < T; t++) {
                int row = b * T + t;
                assertTrue(Math.abs(w[row] - want.weight[b][t]) <= tolScalar * Math.max(1, want.weight[b][t]), "weight " + row + ": " + w[row] + " vs " + want.weight[b][t]);
                assertTrue(Math.abs(tl[row] - want.tokenLoss[b][t]) <= tolScalar * Math.max(1, Math.abs(want.tokenLoss[b][t])), "token_loss " + row + ": " + tl[row] + " vs " + want.tokenLoss[b][t]);
                for (int v = 0; v < V; v++) {
                    double d = g[row * V + v] - want.grad[b][t][v];
                    num += d * d;
                    den += want.grad[b][t][v] * want.grad[b][t][v];
                }
            }
            double rel = den == 0 ? Math.sqrt(num) : Math.sqrt(num / den);
            assertTrue(rel <= tolGrad, "gradient relative L2 " + rel + " > " + tolGrad);
        }
    }

    static String hostBackend() { return Backends.available(Backend.CPU) ? "cpu" : "reference"; }

    @Test
    void cpuReplayAgreesWithTheOfficialFormulasF32() throws IOException { check(DType.F32, 0, "bool", 1e-5, 1e-4, hostBackend()); }

    @Test
    void cpuReplayAgreesWithTheOfficialFormulasBf16() throws IOException { check(DType.BF16, 0, "u8", 1e-4, 1e-3, hostBackend()); }

    @Test
    void cpuReplayAgreesWithTheOfficialFormulasHugeLogits() throws IOException { check(DType.F32, 1e4, "i32", 1e-4, 1e-3, hostBackend()); }

    @Test
    void referenceReplayAgreesWithTheOfficialFormulas() throws IOException {
        // Both are float64; only the f32 outputs round (2^-24 relative).
        check(DType.F32, 0, "f32", 1e-7, 1e-6, "reference");
    }

    @Test
    void maskAsInt64() throws IOException { check(DType.F32, -50, "i64", 1e-5, 1e-4, hostBackend()); }

    // ------------------------------------------------------------------ failures: one line, non-zero exit, no file

    private void fails(Run run, Path out, String... fragments) {
        assertEquals(1, run.code(), run.err());
        String err = run.err();
        assertEquals(1, err.lines().count(), "exactly one line on stderr: " + err);
        for (String f : fragments) assertTrue(err.contains(f), "stderr '" + err.trim() + "' should contain '" + f + "'");
        assertFalse(err.contains("Exception") || err.contains("\tat "), "no stack trace: " + err);
        assertFalse(Files.exists(out), "no output file after a failure");
    }

    @Test
    void badFilesFailWithOneLine() throws IOException {
        boolean[][] mask = {{true, true}};
        Path in = dir.resolve("b.safetensors"), out = dir.resolve("r.safetensors");
        writeBatch(in, 1, 2, 9, DType.F32, 1, mask, "u8", 1);
        byte[] bytes = Files.readAllBytes(in);

        Path truncated = dir.resolve("truncated.safetensors");
        Files.write(truncated, java.util.Arrays.copyOf(bytes, bytes.length - 10));
        fails(main("replay", "--in", truncated.toString(), "--out", out.toString()), out, truncated.toString(), "truncated");

        Path nofile = dir.resolve("missing.safetensors");
        fails(main("replay", "--in", nofile.toString(), "--out", out.toString()), out, "no such file");

        Path noReverse = dir.resolve("noreverse.safetensors");
        new Safetensors.Writer().addFloats("student_logits", new long[] {1, 1, 3}, new float[3]).addFloats("dpo_logits", new long[] {1, 1, 3}, new float[3])
                .addFloats("reference_logits", new long[] {1, 1, 3}, new float[3])
                .add("mask", DType.U8, new long[] {1, 1}, MemorySegment.ofArray(new byte[] {1})).write(noReverse);
        fails(main("replay", "--in", noReverse.toString(), "--out", out.toString()), out, "missing tensor 'reverse_logits'", "reference_logits");
        Run ok = main("replay", "--in", noReverse.toString(), "--out", out.toString(), "--variant", "adaptive");
        assertEquals(0, ok.code(), ok.err());
        Files.delete(out);

        Path vocab = dir.resolve("vocab.safetensors");
        new Safetensors.Writer().addFloats("student_logits", new long[] {1, 1, 3}, new float[3]).addFloats("dpo_logits", new long[] {1, 1, 4}, new float[4])
                .addFloats("reverse_logits", new long[] {1, 1, 3}, new float[3])
                .add("mask", DType.U8, new long[] {1, 1}, MemorySegment.ofArray(new byte[] {1})).write(vocab);
        fails(main("replay", "--in", vocab.toString(), "--out", out.toString()), out, "dpo_logits has shape [1, 1, 4]", "vocabulary sizes differ");

        Path badMask = dir.resolve("badmask.safetensors");
        new Safetensors.Writer().addFloats("student_logits", new long[] {1, 2, 3}, new float[6]).addFloats("dpo_logits", new long[] {1, 2, 3}, new float[6])
                .addFloats("reverse_logits", new long[] {1, 2, 3}, new float[6])
                .add("mask", DType.U8, new long[] {2, 1}, MemorySegment.ofArray(new byte[] {1, 1})).write(badMask);
        fails(main("replay", "--in", badMask.toString(), "--out", out.toString()), out, "mask has shape [2, 1], expected [1, 2]");

        Path f64 = dir.resolve("f64.safetensors");
        new Safetensors.Writer().addDoubles("student_logits", new long[] {1, 1, 3}, new double[3]).addFloats("dpo_logits", new long[] {1, 1, 3}, new float[3])
                .addFloats("reverse_logits", new long[] {1, 1, 3}, new float[3])
                .add("mask", DType.U8, new long[] {1, 1}, MemorySegment.ofArray(new byte[] {1})).write(f64);
        fails(main("replay", "--in", f64.toString(), "--out", out.toString()), out, "student_logits has dtype F64");

        Path nan = dir.resolve("nan.safetensors");
        float[] s = new float[2 * 3 * 5];
        s[(1 * 3 + 2) * 5 + 4] = Float.NaN;
        new Safetensors.Writer().addFloats("student_logits", new long[] {2, 3, 5}, s).addFloats("dpo_logits", new long[] {2, 3, 5}, new float[30])
                .addFloats("reverse_logits", new long[] {2, 3, 5}, new float[30])
                .add("mask", DType.U8, new long[] {2, 3}, MemorySegment.ofArray(new byte[] {1, 1, 1, 1, 1, 1})).write(nan);
        fails(main("replay", "--in", nan.toString(), "--out", out.toString()), out, nan.toString(), "batch 1, position 2", "column 4", "student=NaN");
    }

    /** A usage error: exit 2, at most two lines on stderr, each fragment in them, no stack trace. */
    private static void usage(Run r, String... fragments) {
        assertEquals(2, r.code(), r.err());
        assertTrue(r.err().lines().count() <= 2, "at most two lines on stderr: " + r.err());
        for (String f : fragments) assertTrue(r.err().contains(f), "stderr '" + r.err().trim() + "' should contain '" + f + "'");
        assertFalse(r.err().contains("\tat "), "no stack trace: " + r.err());
        assertEquals("", r.out(), "nothing on stdout after a usage error");
    }

    @Test
    void usageErrorsExitWithTwoInAtMostTwoLines() {
        usage(main("replay", "--in"), "Missing required parameter for option '--in'");
        usage(main("replay", "--in", "a", "--out", "b", "--beta", "-1"), "beta must be finite and > 0");
        usage(main("replay", "--in", "a", "--out", "b", "--beta", "x"), "--beta", "'x'");
        usage(main("replay", "--in", "a", "--out", "b", "--variant", "ppo"), "unknown variant 'ppo'");
        usage(main("replay", "--in", "a", "--out", "b", "--backend", "tpu"), "unknown backend 'tpu'");
        usage(main("replay", "--in", "a", "--out", "b", "--sequence-divisor", "-1"), "--sequence-divisor must be finite and >= 0");
        usage(main("replay", "--frobnicate"), "Unknown option: '--frobnicate'");
        usage(main("replay", "--in", "a"), "Missing required option", "--out");
        usage(main("nonsense"), "nonsense");
        usage(main(), "missing command");
        if (!Backends.available(Backend.CUDA))
            usage(main("replay", "--in", "a", "--out", "b", "--backend", "cuda"), "the cuda backend is unavailable");
    }

    @Test
    void helpGoesToStdoutWithExitZeroAndDescribesEveryOption() {
        for (String cmd : new String[] {"replay", "self-check"}) {
            Run r = main(cmd, "--help");
            assertEquals(0, r.code(), r.err());
            assertEquals("", r.err());
            var spec = new picocli.CommandLine(cmd.equals("replay") ? new ReplayCommand() : new SelfCheckCommand()).getCommandSpec();
            for (var o : spec.options()) {
                String n = o.longestName();
                assertTrue(r.out().contains(n) || (o.negatable() && r.out().contains("--[no-]" + n.substring(2))), cmd + " --help should list " + o.longestName() + ":\n" + r.out());
                assertTrue(o.description().length > 0 && !o.description()[0].isBlank(), cmd + " " + o.longestName() + " has no description");
            }
        }
        Run r = main("--help");
        assertEquals(0, r.code());
        assertTrue(r.out().contains("replay") && r.out().contains("self-check"), r.out());
    }

    @Test
    void verboseWorksAfterTheCommandAndNoLengthNormIsAccepted() throws IOException {
        boolean[][] mask = {{true, true, false}};
        Path in = dir.resolve("b.safetensors"), on = dir.resolve("on.safetensors"), off = dir.resolve("off.safetensors");
        writeBatch(in, 1, 3, 11, DType.F32, 0, mask, "u8", 5);
        Run a = main("replay", "--in", in.toString(), "--out", on.toString(), "-v", "--length-norm");
        assertEquals(0, a.code(), a.err());
        Run b = main("-q", "replay", "--no-length-norm", "--in", in.toString(), "--out", off.toString());
        assertEquals(0, b.code(), b.err());
        try (Safetensors.Reader x = Safetensors.open(on); Safetensors.Reader y = Safetensors.open(off)) {
            assertEquals("true", x.metadata().get("length_norm"));
            assertEquals("false", y.metadata().get("length_norm"));
            double lx = x.segment("loss").get(java.lang.foreign.ValueLayout.JAVA_DOUBLE_UNALIGNED, 0);
            double ly = y.segment("loss").get(java.lang.foreign.ValueLayout.JAVA_DOUBLE_UNALIGNED, 0);
            // one sequence of two selected rows: the sum is twice the mean
            assertEquals(2 * lx, ly, 1e-12 * Math.abs(ly));
        }
    }

    /** A host CLI with its own inherited -v/-q (as cli.Main will be) takes both commands as subcommands. */
    @picocli.CommandLine.Command(name = "host", mixinStandardHelpOptions = true)
    static final class Host implements Runnable {
        @picocli.CommandLine.Option(names = {"-v", "--verbose"}, scope = picocli.CommandLine.ScopeType.INHERIT, description = "more")
        boolean verbose;

        @Override
        public void run() { }
    }

    @Test
    void registersAsSubcommandsOfAHostCli() throws IOException {
        Host host = new Host();
        picocli.CommandLine cl = KernelMain.configure(new picocli.CommandLine(host)
                .addSubcommand(new ReplayCommand()).addSubcommand(new SelfCheckCommand()));
        ByteArrayOutputStream o = new ByteArrayOutputStream(), e = new ByteArrayOutputStream();
        cl.setOut(new java.io.PrintWriter(o, true, StandardCharsets.UTF_8)).setErr(new java.io.PrintWriter(e, true, StandardCharsets.UTF_8));
        boolean[][] mask = {{true, false}};
        Path in = dir.resolve("b.safetensors"), out = dir.resolve("r.safetensors");
        writeBatch(in, 1, 2, 7, DType.F32, 0, mask, "u8", 3);
        assertEquals(0, cl.execute("replay", "--in", in.toString(), "--out", out.toString(), "-v"), e.toString(StandardCharsets.UTF_8));
        assertTrue(host.verbose, "-v after the subcommand reaches the host");
        assertTrue(o.toString(StandardCharsets.UTF_8).startsWith("replay: loss"), o.toString(StandardCharsets.UTF_8));
        assertEquals(2, cl.execute("replay", "--bogus"));
        assertTrue(e.toString(StandardCharsets.UTF_8).startsWith("host replay: Unknown option: '--bogus'"), e.toString(StandardCharsets.UTF_8));
    }

    @Test
    void selfCheckRunsAndPasses() {
        Run r = main("self-check");
        assertEquals(0, r.code(), r.err());
        assertTrue(r.out().contains("relative L2 difference to the reference"), r.out());
        assertTrue(r.out().contains("self-check: ok"), r.out());
    }
}
