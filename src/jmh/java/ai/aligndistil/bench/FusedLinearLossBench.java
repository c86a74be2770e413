package ai.aligndistil.bench;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.TreeMap;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.BoolOptional;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorArrayRefOptional;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.knowm.xchart.BitmapEncoder;
import org.knowm.xchart.CategoryChart;
import org.knowm.xchart.CategoryChartBuilder;

import ai.aligndistil.io.Json;
import ai.aligndistil.io.DType;
import ai.aligndistil.kernel.FusedDistillLoss;
import ai.aligndistil.kernel.LossConfig;
import ai.aligndistil.model.ChunkedFusedLinearLoss;
import ai.aligndistil.model.Tensors;
import ai.aligndistil.model.TorchRuntime;

/**
 * CPU measurement of {@link ChunkedFusedLinearLoss} against the unfused head path (benchmarks/fused-linear-cpu.sh).
 * Not a JMH benchmark: each variant runs in a fresh JVM so its peak memory can be read from the kernel.
 * <pre>
 *   FusedLinearLossBench run --variant unfused|fused [--chunk C] [--tokens N] [--hidden H] [--vocab V] [--reps R] [--warmup W]
 *       one JSON line: per-call wall times (ms), their median, and the peak extra resident memory
 *   FusedLinearLossBench report --out PREFIX --meta k=v... results.jsonl
 *       PREFIX.json (all samples + summary), PREFIX.md (table, ratios), PREFIX.png (chart)
 * </pre>
 * The operation in both variants: the student head logits {@code Xs Ws^T} with gradients for Xs and Ws, the
 * two teachers from hidden states and heads, the aligndistil loss (f32, every row selected). Unfused = what
 * {@code DistillStage.microStep} does with the head ({@code torch.linear}, as {@code CausalLM.forward}): three full [N, V] logits, an [N, V] gradient from
 * FusedDistillLoss, {@code logits.backward(grad)} (autograd computes dXs, dWs). Fused = {@code ChunkedFusedLinearLoss.run}
 * (dX, dW f32). Peak extra memory: before the first call the process resets its resident-set high-water mark
 * ({@code 5 > /proc/self/clear_refs}) and reads VmRSS; after the last call it reads VmHWM; the difference is the
 * most memory the calls (warm-up included, so a cached workspace counts) ever added on top of the inputs. The script
 * runs with {@code GLIBC_TUNABLES=glibc.malloc.mmap_threshold=1048576}: every block of 1 MiB or more is mapped on
 * allocation and unmapped on free, so resident memory follows the live buffers instead of the allocator's cache.
 */
@SuppressWarnings("try")
public final class FusedLinearLossBench {
    private FusedLinearLossBench() {}

    public static void main(String[] args) throws Exception {
        if (args.length == 0) usage();
        Map<String, String> o = new LinkedHashMap<>();
        List<String> rest = new ArrayList<>();
        for (int i = 1; i < args.length; i++) {
            if (args[i].startsWith("--")) o.put(args[i].substring(2), args[++i]);
            else rest.add(args[i]);
        }
        switch (args[0]) {
            case "run" -> run(o);
            case "report" -> report(o, rest);
            default -> usage();
        }
    }

    private static void usage() {
        System.err.println("usage: FusedLinearLossBench run --variant unfused|fused [--chunk C] [--tokens N] [--hidden H] [--vocab V] [--reps R] [--warmup W]"
                + " | report --out PREFIX [--meta k=v,...] results.jsonl");
        System.exit(2);
    }

    // ------------------------------------------------------------------------------------------ run

    static void run(Map<String, String> o) throws IOException {
        String variant = o.getOrDefault("variant", "fused");
        int n = Integer.parseInt(o.getOrDefault("tokens", "256")), h = Integer.parseInt(o.getOrDefault("hidden", "896"));
        int v = Integer.parseInt(o.getOrDefault("vocab", "151936")), reps = Integer.parseInt(o.getOrDefault("reps", "3"));
        int warmup = Integer.parseInt(o.getOrDefault("warmup", "1")), chunk = Integer.parseInt(o.getOrDefault("chunk", "0"));
        TorchRuntime.init();
        LossConfig cfg = LossConfig.defaults();
        torch.manual_seed(1);
        Tensor xs = torch.randn(1, n, h).requires_grad_(true);
        // in-place scaling: no freed temporaries the allocator could hand back later (they would hide memory growth)
        Tensor ws = torch.randn(v, h).mul_(Tensors.scalar(2 / Math.sqrt(h))).requires_grad_(true);
        Tensor xd = torch.randn(1, n, h), wd = torch.randn(v, h).mul_(Tensors.scalar(2 / Math.sqrt(h)));
        Tensor x2 = torch.randn(1, n, h), w2 = torch.randn(v, h).mul_(Tensors.scalar(2 / Math.sqrt(h)));
        FusedDistillLoss rowLoss = FusedDistillLoss.create(cfg);
        ChunkedFusedLinearLoss fl = variant.equals("fused") ? new ChunkedFusedLinearLoss(cfg, chunk) : null;
        try (PointerScope warm = new PointerScope()) {
            torch.mm(torch.randn(64, 64), torch.randn(64, 64)); // start the thread pools before the baseline
        }
        System.gc();
        Files.writeString(Path.of("/proc/self/clear_refs"), "5");
        long base = status("VmRSS");
        double[] ms = new double[reps];
        double loss = 0;
        for (int i = -warmup; i < reps; i++) {
            long t0 = System.nanoTime();
            try (PointerScope s = new PointerScope()) {
                if (fl != null) {
                    ChunkedFusedLinearLoss.Result r = fl.run(xs, ws, ChunkedFusedLinearLoss.Teacher.hidden(xd, wd), ChunkedFusedLinearLoss.Teacher.hidden(x2, w2), null);
                    loss = r.loss();
                } else {
                    loss = unfused(rowLoss, xs, ws, xd, wd, x2, w2);
                    xs.mutable_grad().put(new Tensor());
                    ws.mutable_grad().put(new Tensor());
                }
            }
            if (i >= 0) ms[i] = (System.nanoTime() - t0) / 1e6;
        }
        long hwm = status("VmHWM");
        if (fl != null) fl.close();
        double[] sorted = ms.clone();
        Arrays.sort(sorted);
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("variant", variant);
        out.put("chunk", fl == null ? 0 : fl.chunk(false));
        out.put("threads", TorchRuntime.threads());
        out.put("tokens", n);
        out.put("hidden", h);
        out.put("vocab", v);
        out.put("ms", Arrays.stream(ms).boxed().toList());
        out.put("median_ms", sorted[sorted.length / 2]);
        out.put("peak_extra_mib", (hwm - base) / 1024.0);
        out.put("loss", loss);
        System.out.println(Json.write(out));
    }

    private static double unfused(FusedDistillLoss rowLoss, Tensor xs, Tensor ws, Tensor xd, Tensor wd, Tensor x2, Tensor w2) {
        long n = xs.size(1), v = ws.size(0);
        Tensor zs = torch.linear(xs, ws); // as CausalLM.forward: its backward writes dW [V, H] directly (no transposed copy)
        Tensor zd, z2;
        try (NoGradGuard g = new NoGradGuard()) {
            zd = torch.linear(xd, wd);
            z2 = torch.linear(x2, w2);
        }
        Tensor grad = Tensors.zeros(ScalarType.Float, 1, n, v);
        double loss;
        try (FusedDistillLoss.Batch b = rowLoss.newBatch(1, n, v)) {
            b.student(Tensors.segment(zs), DType.F32).dpo(Tensors.segment(zd), DType.F32).second(Tensors.segment(z2), DType.F32)
                    .grad(Tensors.segment(grad), DType.F32);
            loss = b.run();
        }
        zs.backward(grad, new BoolOptional(), false, new TensorArrayRefOptional());
        return loss;
    }

    /** A /proc/self/status field in KiB. */
    private static long status(String key) throws IOException {
        for (String line : Files.readAllLines(Path.of("/proc/self/status")))
            if (line.startsWith(key + ":")) return Long.parseLong(line.replaceAll("[^0-9]", ""));
        throw new IOException("no " + key + " in /proc/self/status");
    }

    // ------------------------------------------------------------------------------------------ report

    @SuppressWarnings("unchecked")
    static void report(Map<String, String> o, List<String> files) throws IOException {
        List<Map<String, Object>> rows = new ArrayList<>();
        for (String f : files)
            for (String line : Files.readAllLines(Path.of(f))) if (line.startsWith("{")) rows.add((Map<String, Object>) Json.parse(line));
        // Group the samples of every fresh JVM by configuration; the time of a configuration is the median of all its calls.
        Map<String, List<Map<String, Object>>> groups = new TreeMap<>();
        for (Map<String, Object> r : rows) groups.computeIfAbsent(key(r), k -> new ArrayList<>()).add(r);
        List<Map<String, Object>> summary = new ArrayList<>();
        Map<String, Double> timeOf = new LinkedHashMap<>(), memOf = new LinkedHashMap<>();
        for (var e : groups.entrySet()) {
            List<Double> all = new ArrayList<>(), mem = new ArrayList<>();
            for (Map<String, Object> r : e.getValue()) {
                for (Object x : (List<Object>) r.get("ms")) all.add(((Number) x).doubleValue());
                mem.add(((Number) r.get("peak_extra_mib")).doubleValue());
            }
            Map<String, Object> s = new LinkedHashMap<>(e.getValue().get(0));
            s.remove("ms");
            s.remove("median_ms");
            s.remove("peak_extra_mib");
            s.remove("loss");
            s.put("calls", all.size());
            s.put("forks", e.getValue().size());
            s.put("median_ms", median(all));
            s.put("min_ms", all.stream().mapToDouble(Double::doubleValue).min().orElse(Double.NaN));
            s.put("max_ms", all.stream().mapToDouble(Double::doubleValue).max().orElse(Double.NaN));
            s.put("peak_extra_mib_median", median(mem));
            summary.add(s);
            timeOf.put(e.getKey(), median(all));
            memOf.put(e.getKey(), median(mem));
        }
        StringBuilder md = new StringBuilder();
        md.append("# Fused-linear loss on the CPU: chunked vs unfused head path\n\n");
        md.append("Operation: aligndistil loss of the student head `Xs Ws^T` with dXs and dWs, teachers from hidden states + heads, f32, every row selected. ");
        md.append("Unfused = three full [N, V] logits + [N, V] gradient + autograd (the trainer's default path); fused = `ChunkedFusedLinearLoss` (chunks of C rows). ");
        md.append("Time: median of every timed call over all forks (warm-up calls excluded). Peak extra memory: VmHWM minus VmRSS after resetting the ");
        md.append("high-water mark (`/proc/self/clear_refs`) just before the first call, median over forks; one fresh JVM per fork.\n\n");
        if (o.containsKey("meta")) md.append("Run: ").append(o.get("meta").replace(",", ", ")).append("\n\n");
        md.append("Both paths must hold the f32 head gradient dW [V, H] (V H 4 bytes; 519 MiB at V = 151936, H = 896), so the table also ");
        md.append("gives the peak minus that output: what each path needs on top of its result.\n\n");
        md.append("| variant | C | threads | N | H | V | calls | median ms | min ms | max ms | peak extra MiB | minus dW MiB | time / unfused | memory / unfused | minus-dW / unfused |\n");
        md.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for (Map<String, Object> s : summary) {
            String un = "unfused/0/" + s.get("threads") + "/" + s.get("tokens") + "/" + s.get("hidden") + "/" + s.get("vocab");
            Double ut = timeOf.get(un), um = memOf.get(un);
            double t = ((Number) s.get("median_ms")).doubleValue(), m = ((Number) s.get("peak_extra_mib_median")).doubleValue();
            double dw = ((Number) s.get("vocab")).doubleValue() * ((Number) s.get("hidden")).doubleValue() * 4 / (1 << 20);
            s.put("dW_mib", dw);
            md.append(String.format(Locale.ROOT, "| %s | %s | %s | %s | %s | %s | %s | %.0f | %.0f | %.0f | %.0f | %.0f | %s | %s | %s |%n", s.get("variant"), s.get("chunk"),
                    s.get("threads"), s.get("tokens"), s.get("hidden"), s.get("vocab"), s.get("calls"), t, ((Number) s.get("min_ms")).doubleValue(),
                    ((Number) s.get("max_ms")).doubleValue(), m, m - dw, ut == null ? "n/a" : String.format(Locale.ROOT, "%.2fx", t / ut),
                    um == null ? "n/a" : String.format(Locale.ROOT, "%.2f", m / um),
                    um == null ? "n/a" : String.format(Locale.ROOT, "%.2f", (m - dw) / (um - dw))));
        }
        md.append("\nGoal (issue 6): fused-linear within 1.2x of the unfused time at a small fraction of its memory.\n");
        String prefix = o.get("out");
        Map<String, Object> json = new LinkedHashMap<>();
        json.put("suite", "fused-linear-cpu");
        if (o.containsKey("meta")) for (String kv : o.get("meta").split(",")) {
            int i = kv.indexOf('=');
            if (i > 0) json.put(kv.substring(0, i), kv.substring(i + 1));
        }
        json.put("summary", summary);
        json.put("samples", rows);
        Files.writeString(Path.of(prefix + ".json"), Json.write(json) + "\n");
        Files.writeString(Path.of(prefix + ".md"), md.toString());
        chart(summary, Path.of(prefix + ".png"));
        System.err.print(md);
    }

    private static void chart(List<Map<String, Object>> summary, Path png) throws IOException {
        CategoryChart c = new CategoryChartBuilder().width(900).height(420).title("Fused-linear vs unfused head path (CPU, f32)")
                .xAxisTitle("variant (threads)").yAxisTitle("median ms / peak extra MiB").build();
        List<String> names = new ArrayList<>();
        List<Double> ms = new ArrayList<>(), mib = new ArrayList<>();
        for (Map<String, Object> s : summary) {
            names.add(s.get("variant") + (((Number) s.get("chunk")).intValue() > 0 ? " C=" + s.get("chunk") : "") + " (" + s.get("threads") + "t, N=" + s.get("tokens") + ")");
            ms.add(((Number) s.get("median_ms")).doubleValue());
            mib.add(((Number) s.get("peak_extra_mib_median")).doubleValue());
        }
        c.addSeries("median ms", names, ms);
        c.addSeries("peak extra MiB", names, mib);
        c.getStyler().setXAxisLabelRotation(20);
        BitmapEncoder.saveBitmap(c, png.toString(), BitmapEncoder.BitmapFormat.PNG);
    }

    private static String key(Map<String, Object> r) {
        return r.get("variant") + "/" + r.get("chunk") + "/" + r.get("threads") + "/" + r.get("tokens") + "/" + r.get("hidden") + "/" + r.get("vocab");
    }

    private static double median(List<Double> xs) {
        double[] a = xs.stream().mapToDouble(Double::doubleValue).sorted().toArray();
        if (a.length == 0) return Double.NaN;
        return a.length % 2 == 1 ? a[a.length / 2] : (a[a.length / 2 - 1] + a[a.length / 2]) / 2;
    }
}
