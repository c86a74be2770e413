package ai.aligndistil.cli;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.lang.management.ManagementFactory;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
/**
 * {@code --nproc-per-node N}: starts N worker JVMs on this machine, as torchrun does: the same command and options,
 * with {@code WORLD_SIZE}, {@code RANK}, {@code LOCAL_RANK}, {@code MASTER_ADDR=127.0.0.1} and {@code MASTER_PORT} (a
 * free loopback port, or the launcher's own MASTER_PORT when set) in each worker's environment, so each joins the
 * group (rank 0 serves the TCPStore). Each worker's output is forwarded line by line with a {@code [rank R]} prefix
 * (rank 0's standard output, the stage's result, unprefixed).
 *
 * <p>Faults: when a worker exits non-zero, the others are given {@code --dist-timeout} to stop by themselves (a rank
 * gone makes their next collective fail at once, or at the timeout), then are stopped (SIGTERM, then SIGKILL); the
 * launcher prints one line naming the first rank that failed and how (its exit code or signal, and its own last
 * error line), and exits 1 (2 when that rank rejected its configuration). A launcher stopped by a signal stops its
 * workers too. The checkpoint is written by rank 0 atomically, so the same command resumes from the last one.
 */
final class Launcher {
    private Launcher() {}

    /** How long workers get between SIGTERM and SIGKILL when the launcher stops them. */
    private static final Duration KILL_GRACE = Duration.ofSeconds(5);

    /** Runs {@code cmd args} as {@code n} workers; returns the exit code of the whole job. */
    static int launch(String cmd, String[] args, int n, Duration timeout, Path out, Map<String, String> env, PrintStream stdout, PrintStream err) {
        if (n < 1) throw CliException.usage(cmd + ": --nproc-per-node must be at least 1, got " + n);
        int port = port(cmd, env);
        List<Process> procs = new ArrayList<>();
        List<String> lastError = new ArrayList<>();
        LinkedBlockingQueue<int[]> exits = new LinkedBlockingQueue<>();
        Thread hook = new Thread(() -> stopAll(procs), "aligndistil-launcher-stop");
        Runtime.getRuntime().addShutdownHook(hook);
        try {
            for (int r = 0; r < n; r++) {
                ProcessBuilder pb = new ProcessBuilder(workerCommand(cmd, args, r));
                Map<String, String> e = pb.environment();
                e.put("WORLD_SIZE", Integer.toString(n));
                e.put("RANK", Integer.toString(r));
                e.put("LOCAL_RANK", Integer.toString(r));
                e.put("LOCAL_WORLD_SIZE", Integer.toString(n));
                e.put("MASTER_ADDR", "127.0.0.1");
                e.put("MASTER_PORT", Integer.toString(port));
                Process p;
                try {
                    p = pb.start();
                } catch (IOException ex) {
                    stopAll(procs);
                    throw CliException.failure(cmd + ": cannot start worker " + r + ": " + ex.getMessage());
                }
                procs.add(p);
                lastError.add(null);
                int rank = r;
                pump(p.getInputStream(), rank == 0 ? stdout : err, rank == 0 ? "" : "[rank " + rank + "] ", null, 0, rank == 0 ? err : null);
                pump(p.getErrorStream(), err, "[rank " + rank + "] ", lastError, rank, null);
                // A thread of our own waits for the exit: Process.onExit() completes on the common ForkJoinPool, which a
                // caller running this launcher on that pool (CompletableFuture.supplyAsync) can starve.
                Thread w = new Thread(() -> {
                    while (true) {
                        try {
                            exits.add(new int[] {rank, p.waitFor()});
                            return;
                        } catch (InterruptedException ignored) {
                            // keep waiting: the exit must be seen
                        }
                    }
                }, "aligndistil-rank-" + rank + "-exit");
                w.setDaemon(true);
                w.start();
            }
            err.println(cmd + ": started " + n + " workers (ranks 0.." + (n - 1) + ", rendezvous on 127.0.0.1:" + port + ", --dist-timeout "
                    + timeout.toSeconds() + " s)");
            int[] firstFailure = null;
            int done = 0;
            long deadline = Long.MAX_VALUE;
            while (done < n) {
                long wait = deadline == Long.MAX_VALUE ? Long.MAX_VALUE : deadline - System.nanoTime();
                int[] x = wait == Long.MAX_VALUE ? exits.take() : exits.poll(Math.max(0, wait), TimeUnit.NANOSECONDS);
                if (x == null) { // the others did not stop by themselves within the timeout
                    err.println(cmd + ": " + (n - done) + " worker(s) still running " + timeout.toSeconds() + " s after rank " + firstFailure[0]
                            + " failed; stopping them");
                    stopAll(procs);
                    deadline = System.nanoTime() + KILL_GRACE.toNanos() * 3;
                    continue;
                }
                done++;
                if (x[1] != 0 && firstFailure == null) {
                    firstFailure = x;
                    deadline = System.nanoTime() + timeout.toNanos();
                }
            }
            if (firstFailure == null) return 0;
            int rank = firstFailure[0], code = firstFailure[1];
            drain();
            String how = describe(code);
            String last = lastError.get(rank);
            if (code == CliException.USAGE) {
                err.println("aligndistil " + cmd + ": rank " + rank + " of " + n + " rejected the job before training" + (last == null ? "" : ": " + last));
                return CliException.USAGE;
            }
            err.println("aligndistil " + cmd + ": rank " + rank + " of " + n + " failed: " + how + (last == null ? "" : "; its last error: " + last)
                    + "; the other ranks were stopped" + (out == null ? "" : "; the last checkpoint (if any) in " + out
                    + " is intact: run the same command to resume from it"));
            return code == CliException.USAGE ? CliException.USAGE : CliException.FAILURE;
        } catch (InterruptedException ex) {
            Thread.currentThread().interrupt();
            stopAll(procs);
            throw CliException.failure(cmd + ": interrupted; the workers were stopped");
        } finally {
            try {
                Runtime.getRuntime().removeShutdownHook(hook);
            } catch (IllegalStateException ignored) {
                // the JVM is shutting down: the hook runs
            }
        }
    }

    /** The rendezvous port: the launcher's MASTER_PORT when set (checked free: a usage error if not), else a free one. */
    private static int port(String cmd, Map<String, String> env) {
        String fixed = env.get("MASTER_PORT");
        if (fixed != null && !fixed.isBlank()) {
            int p;
            try {
                p = Integer.parseInt(fixed.trim());
            } catch (NumberFormatException e) {
                throw CliException.usage(cmd + ": MASTER_PORT must be a port number, got '" + fixed + "'");
            }
            try (ServerSocket s = new ServerSocket()) {
                s.setReuseAddress(true);
                s.bind(new java.net.InetSocketAddress(InetAddress.getByName("127.0.0.1"), p));
            } catch (IOException e) {
                throw CliException.usage(cmd + ": port " + p + " on 127.0.0.1 (MASTER_PORT) is already in use: choose another port, or stop what holds it");
            }
            return p;
        }
        try (ServerSocket s = new ServerSocket(0, 0, InetAddress.getByName("127.0.0.1"))) {
            return s.getLocalPort();
        } catch (IOException e) {
            throw CliException.failure(cmd + ": cannot find a free loopback port: " + e.getMessage());
        }
    }

    /** This JVM's java binary, JVM options and class path, then Main with the same command and options. */
    static List<String> workerCommand(String cmd, String[] args, int rank) {
        List<String> c = new ArrayList<>();
        c.add(Path.of(System.getProperty("java.home"), "bin", "java").toString());
        List<String> jvm = ManagementFactory.getRuntimeMXBean().getInputArguments();
        for (String a : jvm) {
            if (a.startsWith("-agentlib:jdwp") || a.startsWith("-javaagent") || a.startsWith("-Daligndistil.dist.rank=")) continue;
            c.add(a);
        }
        for (String k : System.getProperties().stringPropertyNames()) {
            if (!(k.startsWith("aligndistil.") || k.startsWith("org.bytedeco.")) || k.equals("aligndistil.dist.rank")) continue;
            String d = "-D" + k + "=" + System.getProperty(k);
            if (!jvm.contains(d)) c.add(d);
        }
        c.add("-Daligndistil.dist.rank=" + rank); // shows which worker is which in ps; read by nothing
        c.add("-cp");
        c.add(System.getProperty("java.class.path"));
        c.add(Main.class.getName());
        c.add(cmd);
        c.addAll(List.of(args));
        return c;
    }

    /**
     * Forwards a worker's lines. For rank 0's standard output ({@code chatter} set), lines that a library prints there
     * (Gloo's "[Gloo] Rank 0 is connected ...") go to {@code chatter} with the rank prefix, so that standard output
     * carries the stage's result alone, as in a one-process run.
     */
    private static void pump(InputStream in, PrintStream to, String prefix, List<String> lastError, int rank, PrintStream chatter) {
        Thread t = new Thread(() -> {
            try (BufferedReader r = new BufferedReader(new InputStreamReader(in, StandardCharsets.UTF_8))) {
                String line;
                while ((line = r.readLine()) != null) {
                    PrintStream dest = chatter != null && line.startsWith("[Gloo]") ? chatter : to;
                    String pre = dest == chatter ? "[rank " + rank + "] " : prefix;
                    synchronized (dest) {
                        dest.println(pre + line);
                    }
                    if (lastError != null && line.startsWith("aligndistil ")) {
                        synchronized (lastError) {
                            lastError.set(rank, line.substring("aligndistil ".length()));
                        }
                    }
                }
            } catch (IOException ignored) {
                // the worker is gone
            }
        }, "aligndistil-rank-" + rank + "-output");
        t.setDaemon(true);
        t.start();
        PUMPS.add(t);
    }

    private static final List<Thread> PUMPS = java.util.Collections.synchronizedList(new ArrayList<>());

    /** Waits (briefly) for the output of exited workers to be forwarded. */
    private static void drain() {
        List<Thread> ts;
        synchronized (PUMPS) {
            ts = new ArrayList<>(PUMPS);
            PUMPS.clear();
        }
        for (Thread t : ts) {
            try {
                t.join(2000);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                return;
            }
        }
    }

    private static void stopAll(List<Process> procs) {
        List<Process> live;
        synchronized (procs) {
            live = new ArrayList<>(procs);
        }
        for (Process p : live) if (p.isAlive()) p.destroy();
        long end = System.nanoTime() + KILL_GRACE.toNanos();
        for (Process p : live) {
            try {
                p.waitFor(Math.max(0, end - System.nanoTime()), TimeUnit.NANOSECONDS);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            if (p.isAlive()) p.destroyForcibly();
        }
    }

    /** An exit status in words: the code, or the signal that ended the process. */
    static String describe(int code) {
        if (code > 128 && code < 160) {
            int sig = code - 128;
            String name = switch (sig) {
                case 9 -> "SIGKILL: kill -9, or the kernel's out-of-memory killer";
                case 15 -> "SIGTERM";
                case 6 -> "SIGABRT: a native abort";
                case 11 -> "SIGSEGV: a native crash";
                case 2 -> "SIGINT";
                default -> "signal " + sig;
            };
            return "killed by signal " + sig + " (" + name + ")";
        }
        return "exit code " + code + (code == CliException.USAGE ? " (rejected its configuration)" : "");
    }
}
