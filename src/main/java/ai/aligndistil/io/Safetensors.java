package ai.aligndistil.io;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Hugging Face safetensors, read through a memory mapping and written atomically.
 *
 * <p>Format: an 8-byte little-endian header length N, N bytes of JSON
 * ({@code {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}}}),
 * then the raw little-endian tensor bytes; offsets are relative to the start of the data section.
 *
 * <p>The reader checks everything a broken or hostile file can get wrong (truncation, a header that lies
 * about offsets or sizes, overlapping tensors, unknown dtypes, bad JSON) and throws a
 * {@link SafetensorsException} whose message names the file and the problem, before any tensor is used.
 */
public final class Safetensors {
    private Safetensors() {}

    /** Largest header accepted (the reference implementation uses 100 MB as well). */
    static final long MAX_HEADER_BYTES = 100L << 20;

    /** A file that is not a valid safetensors file, or lacks what the caller asked for. */
    public static final class SafetensorsException extends IOException {
        private static final long serialVersionUID = 1L;
        public SafetensorsException(Path file, String problem) { super(file + ": " + problem); }
    }

    /** One tensor of a file: name, dtype, shape, and where its bytes lie (absolute file offsets). */
    public record TensorInfo(String name, DType dtype, long[] shape, long fileOffset, long byteSize) {
        public long numel() {
            long n = 1;
            for (long d : shape) n *= d;
            return n;
        }

        public String shapeString() { return Arrays.toString(shape); }
    }

    // ------------------------------------------------------------------------------------------------
    // reading
    // ------------------------------------------------------------------------------------------------

    /** Opens and validates a file; tensors are slices of one read-only mapping, valid until close(). */
    public static Reader open(Path file) throws IOException {
        return new Reader(file);
    }

    public static final class Reader implements AutoCloseable {
        private final Path path;
        private final Arena arena;
        private final MemorySegment mapping;
        private final Map<String, TensorInfo> tensors;
        private final Map<String, String> metadata;

        private Reader(Path path) throws IOException {
            this.path = path;
            if (!Files.isRegularFile(path)) throw new SafetensorsException(path, "no such file");
            Arena a = Arena.ofShared();
            try (FileChannel ch = FileChannel.open(path, StandardOpenOption.READ)) {
                long size = ch.size();
                if (size < 8) throw new SafetensorsException(path, "truncated: " + size + " bytes, shorter than the 8-byte header length");
                MemorySegment m = ch.map(FileChannel.MapMode.READ_ONLY, 0, size, a);
                long n = m.get(ValueLayout.JAVA_LONG_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN), 0);
                if (n <= 0 || n > MAX_HEADER_BYTES) throw new SafetensorsException(path, "header length " + n + " is not in 1.." + MAX_HEADER_BYTES);
                if (8 + n > size) throw new SafetensorsException(path, "truncated: the header claims " + n + " bytes but the file has only " + (size - 8) + " after the length");
                byte[] hb = m.asSlice(8, n).toArray(ValueLayout.JAVA_BYTE);
                String header = new String(hb, StandardCharsets.UTF_8);
                Map<String, Object> json;
                try {
                    json = Json.parseObject(header);
                } catch (Json.JsonException e) {
                    throw new SafetensorsException(path, "header is not valid JSON: " + e.getMessage());
                }
                long dataStart = 8 + n;
                long dataSize = size - dataStart;
                Map<String, TensorInfo> ts = new LinkedHashMap<>();
                Map<String, String> meta = new LinkedHashMap<>();
                for (Map.Entry<String, Object> e : json.entrySet()) {
                    String name = e.getKey();
                    if (name.equals("__metadata__")) {
                        if (!(e.getValue() instanceof Map<?, ?> mm)) throw new SafetensorsException(path, "__metadata__ is not an object");
                        for (Map.Entry<?, ?> me : mm.entrySet()) {
                            if (!(me.getValue() instanceof String sv)) throw new SafetensorsException(path, "__metadata__ value of '" + me.getKey() + "' is not a string");
                            meta.put((String) me.getKey(), sv);
                        }
                        continue;
                    }
                    ts.put(name, parseEntry(path, name, e.getValue(), dataStart, dataSize));
                }
                // Tensors must not overlap (a header that lies could alias two outputs).
                List<TensorInfo> sorted = new ArrayList<>(ts.values());
                sorted.sort((x, y) -> Long.compare(x.fileOffset(), y.fileOffset()));
                for (int i = 1; i < sorted.size(); i++) {
                    TensorInfo prev = sorted.get(i - 1), cur = sorted.get(i);
                    if (cur.byteSize() > 0 && prev.fileOffset() + prev.byteSize() > cur.fileOffset())
                        throw new SafetensorsException(path, "tensors '" + prev.name() + "' and '" + cur.name() + "' overlap");
                }
                this.mapping = m;
                this.tensors = Collections.unmodifiableMap(ts);
                this.metadata = Collections.unmodifiableMap(meta);
                this.arena = a;
            } catch (IOException | RuntimeException e) {
                a.close();
                throw e;
            }
        }

        private static TensorInfo parseEntry(Path path, String name, Object v, long dataStart, long dataSize) throws SafetensorsException {
            if (!(v instanceof Map<?, ?> m)) throw new SafetensorsException(path, "entry '" + name + "' is not an object");
            Object dt = m.get("dtype");
            if (!(dt instanceof String dts)) throw new SafetensorsException(path, "tensor '" + name + "' has no dtype");
            DType dtype = DType.fromSafetensors(dts);
            if (dtype == null) throw new SafetensorsException(path, "tensor '" + name + "' has unknown dtype " + dts);
            if (!(m.get("shape") instanceof List<?> sh)) throw new SafetensorsException(path, "tensor '" + name + "' has no shape");
            long[] shape = new long[sh.size()];
            long numel = 1;
            for (int i = 0; i < shape.length; i++) {
                if (!(sh.get(i) instanceof Long d) || d < 0) throw new SafetensorsException(path, "tensor '" + name + "' has a bad shape " + sh);
                shape[i] = d;
                try {
                    numel = Math.multiplyExact(numel, d);
                } catch (ArithmeticException ex) {
                    throw new SafetensorsException(path, "tensor '" + name + "' shape " + sh + " overflows");
                }
            }
            if (!(m.get("data_offsets") instanceof List<?> off) || off.size() != 2
                    || !(off.get(0) instanceof Long b) || !(off.get(1) instanceof Long en))
                throw new SafetensorsException(path, "tensor '" + name + "' has no valid data_offsets");
            if (b < 0 || en < b) throw new SafetensorsException(path, "tensor '" + name + "' has data_offsets [" + b + ", " + en + "] out of order");
            if (en > dataSize)
                throw new SafetensorsException(path, "truncated or lying header: tensor '" + name + "' ends at byte " + en + " of a " + dataSize + "-byte data section");
            long expect;
            try {
                expect = Math.multiplyExact(numel, (long) dtype.byteSize);
            } catch (ArithmeticException ex) {
                throw new SafetensorsException(path, "tensor '" + name + "' is too large");
            }
            if (en - b != expect)
                throw new SafetensorsException(path, "tensor '" + name + "' has " + (en - b) + " bytes but dtype " + dtype.name() + " and shape " + sh + " need " + expect);
            return new TensorInfo(name, dtype, shape, dataStart + b, en - b);
        }

        public Path path() { return path; }

        public Map<String, String> metadata() { return metadata; }

        /** All tensors in header order. */
        public Map<String, TensorInfo> tensors() { return tensors; }

        public boolean has(String name) { return tensors.containsKey(name); }

        public TensorInfo info(String name) throws SafetensorsException {
            TensorInfo t = tensors.get(name);
            if (t == null) throw new SafetensorsException(path, "missing tensor '" + name + "'");
            return t;
        }

        /** The tensor's bytes: a read-only slice of the mapping, valid until {@link #close()}. */
        public MemorySegment segment(String name) throws SafetensorsException {
            TensorInfo t = info(name);
            return mapping.asSlice(t.fileOffset(), t.byteSize()).asReadOnly();
        }

        /** The tensor as float32 values (converted from F64, F32, F16 or BF16), a fresh copy. */
        public float[] readFloats(String name) throws SafetensorsException {
            TensorInfo t = info(name);
            MemorySegment s = segment(name);
            return toFloats(path, t, s);
        }

        @Override
        public void close() { arena.close(); }
    }

    /** Converts a floating-point tensor's little-endian bytes to floats. */
    static float[] toFloats(Path path, TensorInfo t, MemorySegment s) throws SafetensorsException {
        long n = t.numel();
        if (n > Integer.MAX_VALUE - 16) throw new SafetensorsException(path, "tensor '" + t.name() + "' is too large for a Java array");
        float[] out = new float[(int) n];
        switch (t.dtype()) {
            case F32 -> MemorySegment.copy(s, LE_FLOAT, 0, out, 0, out.length);
            case F64 -> { for (int i = 0; i < out.length; i++) out[i] = (float) s.getAtIndex(LE_DOUBLE, i); }
            case BF16 -> { for (int i = 0; i < out.length; i++) out[i] = Float.intBitsToFloat((s.getAtIndex(LE_SHORT, i) & 0xffff) << 16); }
            case F16 -> { for (int i = 0; i < out.length; i++) out[i] = Float.float16ToFloat(s.getAtIndex(LE_SHORT, i)); }
            default -> throw new SafetensorsException(path, "tensor '" + t.name() + "' has dtype " + t.dtype().name() + ", expected a floating-point tensor");
        }
        return out;
    }

    static final ValueLayout.OfFloat LE_FLOAT = ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    static final ValueLayout.OfDouble LE_DOUBLE = ValueLayout.JAVA_DOUBLE_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    static final ValueLayout.OfShort LE_SHORT = ValueLayout.JAVA_SHORT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);

    // ------------------------------------------------------------------------------------------------
    // writing
    // ------------------------------------------------------------------------------------------------

    /**
     * Collects tensors (by reference: their memory must stay valid until {@link #write}) and writes them
     * atomically: a temporary file in the target's folder, fsync, rename over the target, fsync of the
     * folder. A crash mid-write leaves either the old file or none, never a half file under the name.
     */
    public static final class Writer {
        private record Entry(String name, DType dtype, long[] shape, MemorySegment data) {}

        private final Map<String, Entry> entries = new LinkedHashMap<>();
        private final Map<String, String> metadata = new LinkedHashMap<>();

        public Writer metadata(String key, String value) {
            metadata.put(key, value);
            return this;
        }

        /** Adds a tensor whose little-endian bytes are {@code data} (byte size must match dtype x shape). */
        public Writer add(String name, DType dtype, long[] shape, MemorySegment data) {
            if (name == null || name.isEmpty() || name.equals("__metadata__")) throw new IllegalArgumentException("bad tensor name: " + name);
            if (entries.containsKey(name)) throw new IllegalArgumentException("duplicate tensor name: " + name);
            long numel = 1;
            for (long d : shape) {
                if (d < 0) throw new IllegalArgumentException("negative dimension in " + Arrays.toString(shape));
                numel = Math.multiplyExact(numel, d);
            }
            long bytes = Math.multiplyExact(numel, (long) dtype.byteSize);
            if (data.byteSize() != bytes)
                throw new IllegalArgumentException("tensor '" + name + "': " + data.byteSize() + " bytes given, " + dtype.name() + " " + Arrays.toString(shape) + " needs " + bytes);
            entries.put(name, new Entry(name, dtype, shape.clone(), data));
            return this;
        }

        public Writer addFloats(String name, long[] shape, float[] values) {
            MemorySegment seg = MemorySegment.ofArray(new byte[values.length * 4]);
            MemorySegment.copy(values, 0, seg, LE_FLOAT, 0, values.length);
            return add(name, DType.F32, shape, seg);
        }

        public Writer addDoubles(String name, long[] shape, double[] values) {
            MemorySegment seg = MemorySegment.ofArray(new byte[values.length * 8]);
            MemorySegment.copy(values, 0, seg, LE_DOUBLE, 0, values.length);
            return add(name, DType.F64, shape, seg);
        }

        /** The header bytes (JSON padded with spaces to a multiple of 8, as the reference writer does). */
        byte[] header() {
            Map<String, Object> h = new LinkedHashMap<>();
            if (!metadata.isEmpty()) h.put("__metadata__", new LinkedHashMap<>(metadata));
            long off = 0;
            for (Entry e : entries.values()) {
                Map<String, Object> t = new LinkedHashMap<>();
                t.put("dtype", e.dtype().name());
                List<Object> shape = new ArrayList<>();
                for (long d : e.shape()) shape.add(d);
                t.put("shape", shape);
                t.put("data_offsets", List.of(off, off + e.data().byteSize()));
                off += e.data().byteSize();
                h.put(e.name(), t);
            }
            // Pad the JSON with spaces so the data section starts 8-byte aligned (as the reference writer does).
            byte[] json = Json.write(h).getBytes(StandardCharsets.UTF_8);
            int pad = (8 - json.length % 8) % 8;
            byte[] out = java.util.Arrays.copyOf(json, json.length + pad);
            java.util.Arrays.fill(out, json.length, out.length, (byte) ' ');
            return out;
        }

        public void write(Path target) throws IOException {
            byte[] hb = header();
            AtomicFiles.write(target, ch -> {
                AtomicFiles.writeFully(ch, ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(hb.length).flip());
                AtomicFiles.writeFully(ch, ByteBuffer.wrap(hb));
                byte[] chunk = null;
                for (Entry e : entries.values()) {
                    MemorySegment d = e.data();
                    if (d.isNative()) {
                        // Chunks keep each ByteBuffer view under 2 GB.
                        for (long o = 0; o < d.byteSize(); o += 1L << 30) {
                            long n = Math.min(1L << 30, d.byteSize() - o);
                            AtomicFiles.writeFully(ch, d.asSlice(o, n).asByteBuffer());
                        }
                    } else {
                        // Heap segments of float[], short[]... have no ByteBuffer view: copy through a chunk.
                        if (chunk == null) chunk = new byte[1 << 22];
                        MemorySegment c = MemorySegment.ofArray(chunk);
                        for (long o = 0; o < d.byteSize(); o += chunk.length) {
                            int n = (int) Math.min(chunk.length, d.byteSize() - o);
                            MemorySegment.copy(d, o, c, 0, n);
                            AtomicFiles.writeFully(ch, ByteBuffer.wrap(chunk, 0, n));
                        }
                    }
                }
            });
        }
    }
}
