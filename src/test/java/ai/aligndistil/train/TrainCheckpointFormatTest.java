package ai.aligndistil.train;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.lang.foreign.MemorySegment;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Map;
import java.util.TreeMap;
import java.util.zip.CRC32C;

import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import ai.aligndistil.io.Safetensors;
import ai.aligndistil.model.Tensors;

/**
 * The checksum of a training checkpoint, recomputed here from its documented format: CRC32C over the sorted
 * metadata lines {@code key=value\n} (without the checksum) and, per tensor in name order, {@code name:DTYPE:[shape]\n}
 * with the safetensors dtype spelling (F32, I64, U8: upper case) followed by the bytes. Checkpoints written before
 * the dtype enums were unified keep loading only while this spelling holds.
 */
class TrainCheckpointFormatTest {
    @TempDir Path tmp;

    @Test
    void checksumFollowsTheDocumentedFormat() throws Exception {
        torch.manual_seed(3);
        Map<String, org.bytedeco.pytorch.Tensor> model = Map.of("w", Tensors.fromFloats(new float[] {1, -2, 3.5f, 0.25f, 7, 8}, 2, 3),
                "b", Tensors.fromFloats(new float[] {0.5f, 0.75f}, 2));
        Path f = tmp.resolve("ckpt.safetensors");
        TrainCheckpoint.save(f, model, null, new TrainCheckpoint.State(4, 12, 99, Map.of("note", "x")));
        try (Safetensors.Reader r = Safetensors.open(f)) {
            CRC32C crc = new CRC32C();
            for (var e : new TreeMap<>(r.metadata()).entrySet())
                if (!e.getKey().equals("checksum")) crc.update((e.getKey() + "=" + e.getValue() + "\n").getBytes(StandardCharsets.UTF_8));
            for (var e : new TreeMap<>(r.tensors()).entrySet()) {
                String dtype = switch (e.getValue().dtype()) {
                    case F32 -> "F32";
                    case U8 -> "U8";
                    case I64 -> "I64";
                    default -> throw new AssertionError("unexpected dtype " + e.getValue().dtype().name());
                };
                crc.update((e.getKey() + ":" + dtype + ":" + Arrays.toString(e.getValue().shape()) + "\n").getBytes(StandardCharsets.UTF_8));
                MemorySegment d = r.segment(e.getKey());
                crc.update(d.asByteBuffer());
            }
            assertEquals(String.format("%08x", crc.getValue()), r.metadata().get("checksum"));
        }
    }
}
