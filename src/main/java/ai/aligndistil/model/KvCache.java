package ai.aligndistil.model;

import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * Keys and values of every layer for a batch, preallocated to a maximum length, plus the attention mask of
 * the cached positions (so position ids and padding carry across calls).
 *
 * <p>Create it outside any {@code PointerScope} (its tensors live as long as it does) and, for generation,
 * inside the same {@code InferenceMode} or {@code NoGradGuard} as the forward calls. Each
 * {@link CausalLM#forward(Tensor, Tensor, KvCache)} writes the new keys/values at positions
 * {@code [length, length + T)} and advances {@link #length()}.
 */
public final class KvCache {
    private final Tensor[] keys;
    private final Tensor[] values;
    private final Tensor mask;
    private final long batch;
    private final long capacity;
    private long length;

    /**
     * @param capacity the most positions (prompt + generated) the cache will hold
     * @param dtype    the model's dtype
     */
    public KvCache(ModelConfig c, long batch, long capacity, ScalarType dtype) {
        this(c, batch, capacity, dtype, Devices.Choice.CPU);
    }

    /** A cache on {@code device} (the model's: {@link CausalLM#device()}), so generation never leaves it. */
    public KvCache(ModelConfig c, long batch, long capacity, ScalarType dtype, Devices.Choice device) {
        this.batch = batch;
        this.capacity = capacity;
        keys = new Tensor[c.numLayers()];
        values = new Tensor[c.numLayers()];
        for (int l = 0; l < keys.length; l++) {
            keys[l] = Tensors.zeros(dtype, device, batch, c.numKvHeads(), capacity, c.headDim());
            values[l] = Tensors.zeros(dtype, device, batch, c.numKvHeads(), capacity, c.headDim());
        }
        mask = Tensors.zeros(ScalarType.Long, device, batch, capacity);
    }

    /** Positions held so far. */
    public long length() { return length; }

    public long batch() { return batch; }

    public long capacity() { return capacity; }

    /** Stores the mask of the next T positions and returns the mask of all positions so far [B, length + T]. */
    Tensor appendMask(Tensor newMask) {
        long t = newMask.size(1);
        if (length + t > capacity) throw new IllegalStateException("KV cache full: " + length + " + " + t + " > capacity " + capacity);
        mask.narrow(1, length, t).copy_(newMask);
        return mask.narrow(1, 0, length + t);
    }

    void write(int layer, Tensor k, Tensor v, long at) {
        long t = k.size(2);
        keys[layer].narrow(2, at, t).copy_(k);
        values[layer].narrow(2, at, t).copy_(v);
    }

    Tensor keys(int layer, long upTo) { return keys[layer].narrow(2, 0, upTo); }

    Tensor values(int layer, long upTo) { return values[layer].narrow(2, 0, upTo); }

    void advance(long t) { length += t; }
}
