package ai.aligndistil.kernel;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.management.ManagementFactory;

import org.junit.jupiter.api.Test;

/** Nvtx: names validated once, ranges free of allocation, the profiler calls harmless without a GPU. */
class NvtxTest {
    private static final Nvtx.Range A = Nvtx.range("test/outer"), B = Nvtx.range("test/inner");

    @Test
    void isOnExactlyWhenTheCudaLibraryLoadsUnlessThePropertyTurnsItOff() {
        String p = System.getProperty(Nvtx.PROPERTY, "auto");
        boolean expected = !p.equals("false") && NativeCuda.libraryLoaded();
        assertEquals(expected, Nvtx.enabled(), Nvtx.status());
        assertTrue(Nvtx.status().startsWith(expected ? "on" : "off"), Nvtx.status());
    }

    @Test
    void rejectsNamesThatCannotBeNvtxStrings() {
        for (String bad : new String[] {null, "", "a\0b", "tab\there", "caf\u00e9", "x".repeat(201)}) {
            assertThrows(IllegalArgumentException.class, () -> Nvtx.range(bad), String.valueOf(bad));
        }
        assertEquals("distill/forward_student", Nvtx.range("distill/forward_student").name());
    }

    @Test
    void openReturnsTheSameObjectAndRangesAllocateNothing() {
        assertSame(A, A.open());
        A.close();
        com.sun.management.ThreadMXBean mx = (com.sun.management.ThreadMXBean) ManagementFactory.getThreadMXBean();
        long sink = 0;
        for (int i = 0; i < 200_000; i++) sink += nest(i); // warm up: JIT-compile the downcalls
        long tid = Thread.currentThread().threadId();
        long before = mx.getThreadAllocatedBytes(tid);
        for (int i = 0; i < 10_000; i++) sink += nest(i);
        long after = mx.getThreadAllocatedBytes(tid);
        assertEquals(200_000L * 199_999 / 2 + 10_000L * 9_999 / 2, sink, "both loops ran every iteration"); // sums of 0..199999 and 0..9999
        // The counter itself may allocate a few bytes; 10,000 x 2 ranges allocating anything would show hundreds of kilobytes.
        assertTrue(after - before < 1024, "10,000 x 2 nested ranges allocated " + (after - before) + " bytes (NVTX " + Nvtx.status() + ")");
    }

    private static long nest(int i) {
        try (Nvtx.Range _ = A.open()) {
            B.push();
            try {
                return i;
            } finally {
                Nvtx.pop();
            }
        }
    }

    @Test
    void profilerCallsSucceedWithAGpuAndAreHarmlessWithout() {
        // Without a device (this build VM) both return false and log once; they never throw.
        assertEquals(NativeCuda.available(), Nvtx.profilerStart());
        assertEquals(NativeCuda.available(), Nvtx.profilerStop());
    }
}
