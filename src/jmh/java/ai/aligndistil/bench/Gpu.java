package ai.aligndistil.bench;

import java.lang.foreign.MemorySegment;

import ai.aligndistil.kernel.Backend;
import ai.aligndistil.kernel.Backends;
import ai.aligndistil.kernel.NativeCuda;

/** Device helpers for the CUDA benchmarks, all through the project's own library ({@link NativeCuda}). */
final class Gpu {
    private Gpu() {}

    /** Throws with the reason when no CUDA device answers (the scripts skip the CUDA suites before that happens). */
    static void require() {
        if (!Backends.available(Backend.CUDA))
            throw new IllegalStateException("no CUDA device: " + NativeCuda.problem() + " (the CUDA benchmarks need a GPU; benchmarks/gpu/bench.sh skips them without one)");
    }

    /** A device copy of a host buffer. */
    static MemorySegment upload(MemorySegment host) {
        MemorySegment d = NativeCuda.malloc(host.byteSize());
        NativeCuda.copyToDevice(d, host, host.byteSize(), 0L);
        return d;
    }

    static void free(MemorySegment... device) {
        for (MemorySegment d : device) if (d != null) NativeCuda.free(d);
    }

    /** [cc major, cc minor, SMs, global memory bytes, L2 bytes, driver, runtime] of device 0. */
    static long l2Bytes() { return NativeCuda.deviceInfo(0)[4]; }

    static long globalBytes() { return NativeCuda.deviceInfo(0)[3]; }

    static String describe() {
        long[] i = NativeCuda.deviceInfo(0);
        return NativeCuda.deviceName(0) + " (sm_" + i[0] + i[1] + ", " + i[2] + " SMs, L2 " + (i[4] >> 20) + " MiB, driver " + i[5] + ", runtime " + i[6] + ")";
    }
}
