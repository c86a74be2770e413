package ai.aligndistil.train.dist;

import java.util.ArrayList;
import java.util.Collection;
import java.util.List;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;

/**
 * Gradient synchronisation of a data-parallel step: after the rank's last backward of an optimiser step, the
 * gradients are packed into buckets of at most {@code bucketBytes} (parameters in reverse order, as DDP does, so
 * the buckets follow the order in which backward produces them), every bucket is summed across ranks (all in
 * flight at once) and unpacked. Each rank's loss is divided by the global batch, so the sum is the gradient of the
 * whole global batch: the single-process gradient up to the order of summation.
 *
 * <p><b>Where libtorch's DDP {@code Reducer} ({@link ReducerSync}: bucketed, overlapped with backward) cannot serve,
 * this does</b>: (1) several micro-batches per rank and optimiser step, where the Reducer would reduce at the end of
 * every backward (DDP's {@code no_sync} bookkeeping lives in Python); (2) the fused-linear distill path
 * ({@code --fused-linear}), which adds the LM head's gradient outside autograd after backward, when the Reducer's
 * hooks have already fired. Reducing once after the last micro-batch serves every stage and every path alike; the
 * cost is that communication does not overlap the last backward (docs/distributed.md discusses what that costs).
 */
public final class GradSync {
    private final DistGroup group;
    private final List<List<Tensor>> buckets = new ArrayList<>();

    public GradSync(DistGroup group, Collection<Tensor> params, long bucketBytes) {
        if (bucketBytes <= 0) throw new IllegalArgumentException("bucket size must be positive, got " + bucketBytes);
        this.group = group;
        List<Tensor> ps = new ArrayList<>(params);
        List<Tensor> cur = new ArrayList<>();
        long bytes = 0;
        for (int i = ps.size() - 1; i >= 0; i--) {
            Tensor p = ps.get(i);
            if (!p.requires_grad()) continue;
            long b = p.numel() * p.element_size();
            boolean sameType = cur.isEmpty() || cur.get(0).scalar_type().value == p.scalar_type().value;
            if (!cur.isEmpty() && (bytes + b > bucketBytes || !sameType)) {
                buckets.add(cur);
                cur = new ArrayList<>();
                bytes = 0;
            }
            cur.add(p);
            bytes += b;
        }
        if (!cur.isEmpty()) buckets.add(cur);
    }

    public int buckets() { return buckets.size(); }

    /** Sums every parameter's gradient across ranks, in place (an undefined gradient counts as zeros). */
    @SuppressWarnings("try")
    public void allReduce() {
        if (!group.distributed()) return;
        try (PointerScope s = new PointerScope(); NoGradGuard g = new NoGradGuard()) {
            List<Tensor> flats = new ArrayList<>();
            for (List<Tensor> bucket : buckets) {
                long n = 0;
                for (Tensor p : bucket) n += p.numel();
                Tensor first = bucket.get(0);
                Tensor flat = first.new_empty(n); // same dtype and device as the parameters
                long off = 0;
                for (Tensor p : bucket) {
                    Tensor grad = p.grad();
                    if (grad == null || !grad.defined()) {
                        grad = torch.zeros_like(p);
                        p.mutable_grad().put(grad);
                    }
                    flat.narrow(0, off, p.numel()).copy_(grad.reshape(-1));
                    off += p.numel();
                }
                flats.add(flat);
            }
            group.allReduceSum(flats, "all-reduce of the gradients");
            for (int i = 0; i < buckets.size(); i++) {
                long off = 0;
                for (Tensor p : buckets.get(i)) {
                    p.grad().copy_(flats.get(i).narrow(0, off, p.numel()).view_as(p));
                    off += p.numel();
                }
            }
        }
    }
}
