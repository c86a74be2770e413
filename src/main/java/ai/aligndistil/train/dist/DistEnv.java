package ai.aligndistil.train.dist;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * Where this process stands in a data-parallel job, read from torchrun's environment contract:
 * {@code WORLD_SIZE}, {@code RANK}, {@code LOCAL_RANK}, {@code MASTER_ADDR}, {@code MASTER_PORT} (also what
 * Slurm scripts and Kubernetes' PyTorchJob set). Rank 0 serves the rendezvous store on MASTER_ADDR:MASTER_PORT.
 */
public record DistEnv(int worldSize, int rank, int localRank, String masterAddr, int masterPort) {
    public static final List<String> VARIABLES = List.of("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT");

    public DistEnv {
        if (worldSize < 1) throw DistException.usage("WORLD_SIZE must be at least 1, got " + worldSize);
        if (rank < 0 || rank >= worldSize) throw DistException.usage("RANK must be in 0.." + (worldSize - 1) + ", got " + rank);
        if (localRank < 0) throw DistException.usage("LOCAL_RANK must be non-negative, got " + localRank);
        if (masterPort < 1 || masterPort > 65535) throw DistException.usage("MASTER_PORT must be in 1..65535, got " + masterPort);
        if (masterAddr == null || masterAddr.isBlank()) throw DistException.usage("MASTER_ADDR is empty");
    }

    /**
     * The job this process belongs to, or null when {@code WORLD_SIZE} is unset (a single process). With
     * WORLD_SIZE set, every other variable must be set too (a usage error names the missing ones).
     */
    public static DistEnv fromEnvironment(Map<String, String> env) {
        if (env.get("WORLD_SIZE") == null) return null;
        List<String> missing = new ArrayList<>();
        for (String v : VARIABLES) if (env.get(v) == null || env.get(v).isBlank()) missing.add(v);
        if (!missing.isEmpty()) throw DistException.usage("WORLD_SIZE is set but not " + String.join(", ", missing) + " (torchrun's contract needs all of "
                + String.join(", ", VARIABLES) + ")");
        return new DistEnv(number(env, "WORLD_SIZE"), number(env, "RANK"), number(env, "LOCAL_RANK"), env.get("MASTER_ADDR").trim(), number(env, "MASTER_PORT"));
    }

    private static int number(Map<String, String> env, String name) {
        try {
            return Integer.parseInt(env.get(name).trim());
        } catch (NumberFormatException e) {
            throw DistException.usage(name + " must be an integer, got '" + env.get(name) + "'");
        }
    }
}
