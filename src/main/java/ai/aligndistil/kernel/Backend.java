package ai.aligndistil.kernel;

import java.util.Locale;

/** Where the fused loss runs. One contract, three implementations, compared against each other in the tests. */
public enum Backend {
    /** Plain Java loops in double precision: the ground truth, and the last fallback. */
    REFERENCE,
    /** libaligndistil_cpu: vectorised C (AVX-512 / AVX2 / portable chosen at run time), parallel over tokens. */
    CPU,
    /** libaligndistil_cuda: the CUDA kernels, asynchronous on a caller-given stream. */
    CUDA;

    public String id() { return name().toLowerCase(Locale.ROOT); }

    public static Backend parse(String s) {
        return switch (s.toLowerCase(Locale.ROOT)) {
            case "reference", "java" -> REFERENCE;
            case "cpu", "native" -> CPU;
            case "cuda", "gpu" -> CUDA;
            default -> throw new IllegalArgumentException("unknown backend '" + s + "' (expected reference, cpu or cuda)");
        };
    }

    @Override
    public String toString() { return id(); }
}
