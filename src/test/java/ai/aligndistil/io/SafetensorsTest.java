package ai.aligndistil.io;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class SafetensorsTest {
    @TempDir
    Path dir;

    @Test
    void roundTripKeepsNamesShapesDtypesValuesAndMetadata() throws IOException {
        Path f = dir.resolve("a.safetensors");
        float[] x = {1, -2.5f, Float.NEGATIVE_INFINITY, 3e-8f, 7, 8};
        new Safetensors.Writer().metadata("format", "pt")
                .addFloats("x", new long[] {2, 3}, x)
                .addDoubles("scalar", new long[0], new double[] {Math.PI})
                .add("m", DType.U8, new long[] {4}, MemorySegment.ofArray(new byte[] {1, 0, 1, 1}))
                .add("h", DType.BF16, new long[] {2}, MemorySegment.ofArray(new short[] {0x3f80, (short) 0xc000}))
                .write(f);
        byte[] raw = Files.readAllBytes(f);
        long n = ByteBuffer.wrap(raw, 0, 8).order(ByteOrder.LITTLE_ENDIAN).getLong();
        assertEquals(0, (8 + n) % 8, "data section aligned to 8 bytes");
        try (Safetensors.Reader r = Safetensors.open(f)) {
            assertEquals("pt", r.metadata().get("format"));
            assertEquals(DType.F32, r.info("x").dtype());
            assertArrayEquals(new long[] {2, 3}, r.info("x").shape());
            assertArrayEquals(x, r.readFloats("x"));
            assertArrayEquals(new long[0], r.info("scalar").shape());
            assertEquals(Math.PI, r.segment("scalar").get(java.lang.foreign.ValueLayout.JAVA_DOUBLE_UNALIGNED, 0));
            assertArrayEquals(new float[] {1f, -2f}, r.readFloats("h"));
            assertEquals(4, r.segment("m").byteSize());
            assertTrue(r.segment("x").isReadOnly());
        }
        // no temporary file left next to it
        try (var s = Files.list(dir)) {
            assertEquals(1, s.count());
        }
    }

    private Path writeRaw(String header, byte[] data) throws IOException {
        byte[] h = header.getBytes(StandardCharsets.UTF_8);
        ByteBuffer b = ByteBuffer.allocate(8 + h.length + data.length).order(ByteOrder.LITTLE_ENDIAN);
        b.putLong(h.length).put(h).put(data);
        Path f = dir.resolve("raw-" + Math.abs(header.hashCode()) + ".safetensors");
        Files.write(f, b.array());
        return f;
    }

    private void refused(Path f, String fragment) {
        Safetensors.SafetensorsException e = assertThrows(Safetensors.SafetensorsException.class, () -> Safetensors.open(f).close());
        assertTrue(e.getMessage().startsWith(f.toString()), e.getMessage());
        assertTrue(e.getMessage().contains(fragment), "'" + e.getMessage() + "' should contain '" + fragment + "'");
    }

    @Test
    void brokenFilesAreRefusedWithTheFileAndTheProblem() throws IOException {
        Path shortFile = dir.resolve("short.safetensors");
        Files.write(shortFile, new byte[] {1, 2, 3});
        refused(shortFile, "truncated");
        refused(writeRaw("{\"x\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", new byte[8]), "truncated or lying header");
        refused(writeRaw("{\"x\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,12]}}", new byte[16]), "need 16");
        refused(writeRaw("{\"x\":{\"dtype\":\"Q4\",\"shape\":[4],\"data_offsets\":[0,16]}}", new byte[16]), "unknown dtype Q4");
        refused(writeRaw("{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"y\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", new byte[16]), "overlap");
        refused(writeRaw("{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", new byte[16]), "out of order");
        refused(writeRaw("{\"x\": [1, 2", new byte[0]), "not valid JSON");
        refused(writeRaw("{\"x\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", new byte[8]), "bad shape");
        // a header length larger than the file
        ByteBuffer b = ByteBuffer.allocate(16).order(ByteOrder.LITTLE_ENDIAN).putLong(1000).putLong(0);
        Path lying = dir.resolve("lying.safetensors");
        Files.write(lying, b.array());
        refused(lying, "truncated: the header claims 1000 bytes");
        refused(dir.resolve("absent.safetensors"), "no such file");
        Path ok = dir.resolve("ok.safetensors");
        new Safetensors.Writer().addFloats("x", new long[] {1}, new float[] {1}).write(ok);
        try (Safetensors.Reader r = Safetensors.open(ok)) {
            Safetensors.SafetensorsException e = assertThrows(Safetensors.SafetensorsException.class, () -> r.info("nope"));
            assertTrue(e.getMessage().contains("missing tensor 'nope'"));
        }
    }

    @Test
    void writerRefusesInconsistentTensors() {
        Safetensors.Writer w = new Safetensors.Writer();
        assertThrows(IllegalArgumentException.class, () -> w.add("x", DType.F32, new long[] {3}, MemorySegment.ofArray(new byte[8])));
        w.addFloats("x", new long[] {2}, new float[] {1, 2});
        assertThrows(IllegalArgumentException.class, () -> w.addFloats("x", new long[] {2}, new float[] {1, 2}));
        assertThrows(IllegalArgumentException.class, () -> w.addFloats("__metadata__", new long[] {1}, new float[] {1}));
    }

    @Test
    void jsonParserIsStrict() {
        assertEquals(Arrays.asList(1L, 2.5, "a\"b", true, null), Json.parse("[1, 2.5, \"a\\\"b\", true, null]"));
        assertThrows(Json.JsonException.class, () -> Json.parse("{\"a\":1,}"));
        assertThrows(Json.JsonException.class, () -> Json.parse("{\"a\":1,\"a\":2}"));
        assertThrows(Json.JsonException.class, () -> Json.parse("[1] x"));
        assertThrows(Json.JsonException.class, () -> Json.parse("01"));
        assertEquals("{\"k\":[1,2],\"s\":\"x\\ny\"}", Json.write(Json.parse("{\"k\":[1,2],\"s\":\"x\\ny\"}")));
    }
}
