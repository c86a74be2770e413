package ai.aligndistil.bench;

import java.lang.foreign.MemorySegment;

import org.bytedeco.javacpp.Pointer;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.ScalarTypeOptional;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

import ai.aligndistil.io.DType;
import ai.aligndistil.kernel.LossConfig;
import ai.aligndistil.kernel.Variant;
import ai.aligndistil.model.TorchRuntime;

/**
 * The baseline: the AlignDistil loss composed from libtorch operations the way a Java user of the PyTorch presets
 * would write it, forward and autograd backward on the student logits, teachers under no-grad:
 * <pre>
 *   log p = log_softmax(z_s)                        (bf16 inputs are first cast to f32, differentiably)
 *   no-grad: tvd   = sum |softmax(z_d) - softmax(z_r)|
 *            alpha = beta2 * tvd + eps,  z* = z_d + alpha (z_d - z_r),  log q = log_softmax(z*),  coef = beta / alpha
 *   K     = sum softmax(z_s) (log p - log q)        (reverse KL, per row)
 *   loss  = mean over sequences with a selected row of (sum_t mask coef K) / (sum_t mask)
 *   loss.backward()  -> the gradient on the student logits (f32, or bf16 for bf16 inputs)
 * </pre>
 * The inputs are the benchmark's native buffers wrapped with {@code from_blob} (no copy). Each call runs in its own
 * {@link PointerScope} (libtorch-presets.md: otherwise native memory grows without bound) on a fresh leaf
 * ({@code detach().requires_grad_()}, so gradients never accumulate across calls).
 */
final class TorchLoss {
    private final LossConfig cfg;
    private final boolean upcast;
    private final Tensor zs, zd, zr, mask;

    TorchLoss(BenchData d, LossConfig cfg, int threads) {
        if (cfg.variant() != Variant.ALIGNDISTIL) throw new IllegalArgumentException("the libtorch baseline is the aligndistil variant only");
        // TorchRuntime sizes torch's intra-op pool and OpenBLAS from this property (and logs it).
        System.setProperty("aligndistil.threads", Integer.toString(threads));
        TorchRuntime.init();
        torch.set_num_threads(threads);
        if (torch.get_num_threads() != threads)
            throw new IllegalStateException("libtorch runs " + torch.get_num_threads() + " threads, wanted " + threads);
        this.cfg = cfg;
        ScalarType st = d.dtype == DType.F32 ? ScalarType.Float : ScalarType.BFloat16;
        if (d.dtype == DType.F16) throw new IllegalArgumentException("f16 is not benchmarked");
        this.upcast = d.dtype != DType.F32;
        long[] shape = {d.B, d.T, d.V};
        zs = torch.from_blob(pointer(d.student), shape, new TensorOptions(st));
        zd = torch.from_blob(pointer(d.dpo), shape, new TensorOptions(st));
        zr = torch.from_blob(pointer(d.second), shape, new TensorOptions(st));
        mask = torch.from_blob(pointer(d.mask), new long[] {d.B, d.T}, new TensorOptions(ScalarType.Byte));
    }

    private static Pointer pointer(MemorySegment seg) {
        final long a = seg.address();
        return new Pointer() {
            {
                this.address = a;
            }
        };
    }

    /** One forward and backward; returns the loss. */
    double run() {
        return run(null);
    }

    /** One forward and backward; copies the student gradient into {@code gradOut} when it is not null. */
    double run(MemorySegment gradOut) {
        try (PointerScope scope = new PointerScope()) {
            Tensor leaf = zs.detach().requires_grad_(true);
            Tensor loss = forward(leaf);
            loss.backward();
            double l = loss.item_double();
            if (gradOut != null) {
                Tensor g = leaf.grad().contiguous();
                MemorySegment src = MemorySegment.ofAddress(g.data_ptr().address()).reinterpret(g.nbytes());
                MemorySegment.copy(src, 0, gradOut, 0, g.nbytes());
            }
            return l;
        }
    }

    private Tensor forward(Tensor leaf) {
        ScalarTypeOptional none = new ScalarTypeOptional();
        long[] last = {-1};
        Tensor s = upcast ? leaf.to(ScalarType.Float) : leaf;
        Tensor logp = s.log_softmax(-1);
        Tensor logq, coef;
        try (NoGradGuard g = new NoGradGuard()) {
            Tensor d = upcast ? zd.to(ScalarType.Float) : zd;
            Tensor r = upcast ? zr.to(ScalarType.Float) : zr;
            Tensor tvd = d.softmax(-1).sub(r.softmax(-1)).abs().sum(last, true, none);          // [B, T, 1]
            Tensor alpha = tvd.mul(new Scalar(cfg.beta2())).add(new Scalar(cfg.epsilon()));
            Tensor teacher = d.add(alpha.mul(d.sub(r)));
            logq = teacher.log_softmax(-1);
            coef = alpha.reciprocal().mul(new Scalar(cfg.beta())).squeeze(-1);                  // [B, T]
        }
        Tensor p = s.softmax(-1);
        Tensor kl = p.mul(logp.sub(logq)).sum(last, false, none);                                // [B, T]
        Tensor m = mask.to(ScalarType.Float);
        Tensor count = m.sum(last, false, none);                                                 // [B]
        Tensor perSeq = kl.mul(coef).mul(m).sum(last, false, none).div(count.clamp_min(new Scalar(1.0)));
        Tensor sequences = count.gt(new Scalar(0.0)).to(ScalarType.Float).sum();
        return perSeq.sum().div(sequences.clamp_min(new Scalar(1.0)));
    }
}
