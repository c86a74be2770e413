package ai.aligndistil.train.dist;

import java.util.ArrayList;
import java.util.Collection;
import java.util.List;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.BoolVector;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Reducer;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.SizeTStringMap;
import org.bytedeco.pytorch.SizeTVector;
import org.bytedeco.pytorch.T_SizeTVectorVectorSizeTVector_T;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.global.torch;

/**
 * Gradient synchronisation through libtorch's DDP {@code Reducer}: buckets assigned by
 * {@code compute_bucket_assignment_by_size}, autograd hooks that all-reduce each bucket as soon as backward has
 * produced it (overlapping the rest of backward), gradients averaged over the ranks when backward ends.
 *
 * <p>It serves a step whose rank runs exactly one backward (one micro-batch per rank) through autograd alone: call
 * {@link #prepare} before that micro-batch's forward and {@link #finish} after its backward. Each rank divides its loss
 * by the global batch, so the Reducer's average is the global gradient divided by the world size; {@link #finish}
 * multiplies it back (exact for a power-of-two world size). Where it cannot serve (several micro-batches per rank, the
 * fused-linear path that adds the head's gradient outside autograd) {@link GradSync} does.
 */
public final class ReducerSync {
    private final Reducer reducer;
    private final List<Tensor> params;
    private final int world;

    public ReducerSync(DistGroup group, Collection<Tensor> params, long bucketBytes) {
        this.params = new ArrayList<>(params);
        this.world = group.worldSize();
        TensorVector pv = new TensorVector(this.params.toArray(Tensor[]::new));
        T_SizeTVectorVectorSizeTVector_T assignment = torch.compute_bucket_assignment_by_size(pv, new SizeTVector(bucketBytes));
        boolean[] sparse = new boolean[this.params.size()];
        reducer = new Reducer(pv, assignment.get0(), group.processGroup(), new BoolVector(sparse), bucketBytes, false, false, new SizeTStringMap(),
                bucketBytes, false, false);
    }

    /** Before the forward whose backward is to be synchronised. */
    public void prepare() {
        reducer.prepare_for_forward();
        reducer.prepare_for_backward(new TensorVector());
    }

    /** After that backward: the averaged gradients times the world size, i.e. the sum over ranks. */
    @SuppressWarnings("try")
    public void finish() {
        try (PointerScope s = new PointerScope(); NoGradGuard g = new NoGradGuard()) {
            Scalar w = new Scalar((double) world);
            for (Tensor p : params) {
                Tensor grad = p.grad();
                if (grad != null && grad.defined()) grad.mul_(w);
            }
        }
    }
}
