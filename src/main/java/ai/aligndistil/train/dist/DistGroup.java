package ai.aligndistil.train.dist;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.net.BindException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;

import org.bytedeco.javacpp.chrono.Milliseconds;
import org.bytedeco.pytorch.AllreduceOptions;
import org.bytedeco.pytorch.Backend;
import org.bytedeco.pytorch.GlooDeviceVector;
import org.bytedeco.pytorch.ProcessGroupGloo;
import org.bytedeco.pytorch.ReduceOp;
import org.bytedeco.pytorch.Store;
import org.bytedeco.pytorch.StringVector;
import org.bytedeco.pytorch.TCPStore;
import org.bytedeco.pytorch.TCPStoreOptions;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.Work;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.bytedeco.pytorch.gloo.Device;
import org.bytedeco.pytorch.nccl.ProcessGroupNCCL;

import ai.aligndistil.model.Tensors;
import ai.aligndistil.model.TorchRuntime;

/**
 * A data-parallel process group on libtorch's c10d: a {@link TCPStore} (served by rank 0 on MASTER_ADDR:MASTER_PORT)
 * for the rendezvous and small exchanges, and a collective backend over it: {@link ProcessGroupGloo} for CPU tensors,
 * {@link ProcessGroupNCCL} for CUDA tensors (one device per local rank). Every collective, every store wait and the
 * rendezvous itself is bounded by the group's timeout ({@code --dist-timeout}); a collective that fails (a peer gone:
 * Gloo sees its socket close at once) or runs past the timeout throws a {@link DistException} whose one line names
 * this rank and what is known of the cause (a rank that failed with an exception leaves its message in the store;
 * a killed rank leaves none, which the message says).
 *
 * <p>{@link #single()} is the group of a one-process run: every collective is the identity and costs nothing.
 */
public final class DistGroup implements AutoCloseable {
    /** The collective backend: Gloo for CPU tensors, NCCL for CUDA tensors. */
    public enum Kind {
        GLOO, NCCL;

        /** The backend for the tensors of a device string ({@code cpu}, {@code cuda}, {@code cuda:N}). */
        public static Kind forDevice(String device) {
            String d = device == null ? "cpu" : device.trim().toLowerCase(java.util.Locale.ROOT);
            return d.startsWith("cuda") ? NCCL : GLOO;
        }
    }

    private final int rank, world, localRank;
    private final Kind kind;
    private final Duration timeout;
    private final TCPStore store;
    private final Backend backend;
    private long keySeq;
    private long commNanos;

    private DistGroup(int rank, int world, int localRank, Kind kind, Duration timeout, TCPStore store, Backend backend) {
        this.rank = rank;
        this.world = world;
        this.localRank = localRank;
        this.kind = kind;
        this.timeout = timeout;
        this.store = store;
        this.backend = backend;
    }

    /** The group of a single process (world size 1): every collective returns its input. */
    public static DistGroup single() { return new DistGroup(0, 1, 0, Kind.GLOO, Duration.ofSeconds(300), null, null); }

    /**
     * Joins the job of {@code env}: rank 0 checks that its port is free (a usage error if not) and serves the store,
     * every rank connects to it and builds the backend (which connects the ranks to one another through the store).
     * All of it within {@code timeout}.
     */
    public static DistGroup join(DistEnv env, Duration timeout, Kind kind) {
        if (timeout.isNegative() || timeout.isZero()) throw DistException.usage("--dist-timeout must be positive, got " + timeout.toSeconds() + " s");
        TorchRuntime.init();
        if (kind == Kind.NCCL && !torch.cuda_is_available())
            throw DistException.usage("rank " + env.rank() + ": NCCL needs CUDA tensors, and this libtorch build has no usable CUDA device"
                    + " (the CPU build, or no GPU): train on the CPU, where the group uses Gloo");
        if (env.rank() == 0) requirePortFree(env.masterAddr(), env.masterPort());
        long ms = timeout.toMillis();
        TCPStore store;
        try {
            TCPStoreOptions so = new TCPStoreOptions();
            so.port((short) env.masterPort()).isServer(env.rank() == 0).waitWorkers(false).timeout(new Milliseconds(ms));
            store = new TCPStore(env.masterAddr(), so);
        } catch (RuntimeException e) {
            throw DistException.failure("rank " + env.rank() + ": cannot reach the rendezvous store at " + env.masterAddr() + ":" + env.masterPort()
                    + " within " + timeout.toSeconds() + " s (--dist-timeout): " + oneLine(e), e);
        }
        Backend b;
        try {
            // The Java Store object can be handed to a C++ consumer only once: the backend gets its own client (clone).
            if (kind == Kind.GLOO) {
                ProcessGroupGloo.Options go = ProcessGroupGloo.Options.create(new Milliseconds(ms));
                go.devices(new GlooDeviceVector(glooDevice(env)));
                b = new ProcessGroupGloo(store.clone(), env.rank(), env.worldSize(), go);
            } else {
                b = new ProcessGroupNCCL(store.clone(), env.rank(), env.worldSize(), ProcessGroupNCCL.Options.create());
                ((ProcessGroupNCCL) b).setTimeout(new Milliseconds(ms));
            }
        } catch (RuntimeException e) {
            throw DistException.failure("rank " + env.rank() + ": the " + kind + " group of " + env.worldSize() + " ranks did not form within "
                    + timeout.toSeconds() + " s (--dist-timeout): " + oneLine(e), e);
        }
        DistGroup g = new DistGroup(env.rank(), env.worldSize(), env.localRank(), kind, timeout, store, b);
        g.barrier("rendezvous");
        return g;
    }

    /** Gloo's transport device: GLOO_SOCKET_IFNAME's interface when set, loopback for a loopback master, else the host's default. */
    private static Device glooDevice(DistEnv env) {
        String ifname = System.getenv("GLOO_SOCKET_IFNAME");
        if (ifname != null && !ifname.isBlank()) return ProcessGroupGloo.createDeviceForInterface(ifname.trim());
        if (isLoopback(env.masterAddr())) return ProcessGroupGloo.createDeviceForHostname("127.0.0.1");
        return ProcessGroupGloo.createDefaultDevice();
    }

    private static boolean isLoopback(String addr) {
        try {
            return InetAddress.getByName(addr).isLoopbackAddress();
        } catch (IOException e) {
            return false;
        }
    }

    /** A usage error when {@code addr:port} cannot be bound (another job, or anything else, holds it). */
    static void requirePortFree(String addr, int port) {
        try (ServerSocket s = new ServerSocket()) {
            s.setReuseAddress(true);
            s.bind(new InetSocketAddress(InetAddress.getByName(addr), port));
        } catch (BindException e) {
            throw DistException.usage("rank 0: port " + port + " on " + addr + " is already in use (MASTER_PORT): choose another port, or stop what holds it");
        } catch (IOException e) {
            throw DistException.usage("rank 0: cannot listen on " + addr + ":" + port + " (MASTER_ADDR:MASTER_PORT): " + oneLine(e));
        }
    }

    public int rank() { return rank; }

    public int worldSize() { return world; }

    public boolean isMain() { return rank == 0; }

    public boolean distributed() { return world > 1; }

    public Kind kind() { return kind; }

    /** The device of this rank's tensors: {@code cpu} for Gloo, {@code cuda:LOCAL_RANK} for NCCL (one GPU per local rank). */
    public String device() { return kind == Kind.NCCL ? "cuda:" + localRank : "cpu"; }

    public Duration timeout() { return timeout; }

    /** Seconds spent in collectives since the group formed (waits for slower ranks included). */
    public double commSeconds() { return commNanos / 1e9; }

    /**
     * Sums tensors element-wise across ranks, in place. All of them are issued before the first is awaited, so
     * several buckets are in flight at once.
     */
    public void allReduceSum(List<Tensor> tensors, String what) {
        if (world == 1 || tensors.isEmpty()) return;
        long t0 = System.nanoTime();
        Milliseconds ms = new Milliseconds(timeout.toMillis());
        List<Work> works = new ArrayList<>();
        try {
            for (Tensor t : tensors) {
                AllreduceOptions ao = new AllreduceOptions();
                ao.reduceOp(new ReduceOp(ReduceOp.RedOpType.SUM)).timeout(ms);
                works.add(backend.allreduce(new TensorVector(t), ao));
            }
            for (Work w : works) if (!w._wait(ms)) throw new IllegalStateException("no result within " + timeout.toSeconds() + " s");
        } catch (RuntimeException e) {
            throw failed(what, e);
        } finally {
            commNanos += System.nanoTime() - t0;
        }
    }

    /** Sums numbers across ranks (in float64; through the rank's GPU for NCCL, which reduces CUDA tensors only); returns a new array. */
    public double[] allReduceSum(double[] v, String what) {
        if (world == 1) return v.clone();
        Tensor t = Tensors.zeros(ScalarType.Double, v.length);
        MemorySegment s = Tensors.segment(t);
        for (int i = 0; i < v.length; i++) s.setAtIndex(ValueLayout.JAVA_DOUBLE, i, v[i]);
        if (kind == Kind.NCCL) {
            Tensor d = t.to(new org.bytedeco.pytorch.Device(device()), ScalarType.Double);
            allReduceSum(List.of(d), what);
            t.copy_(d);
        } else allReduceSum(List.of(t), what);
        double[] r = new double[v.length];
        for (int i = 0; i < v.length; i++) r[i] = s.getAtIndex(ValueLayout.JAVA_DOUBLE, i);
        return r;
    }

    /**
     * Whether any rank says yes: for decisions every rank must take together at a step boundary (a stop request that
     * reached one rank, such as SIGTERM, must stop all of them after the same step, or the others wait in the next
     * collective until the timeout).
     */
    public boolean any(boolean local, String what) {
        if (world == 1) return local;
        return allReduceSum(new double[] {local ? 1 : 0}, what)[0] > 0;
    }

    /** Returns when every rank has called it (a one-element all-reduce, so it is bounded by the timeout like every collective). */
    public void barrier(String what) {
        if (world == 1) return;
        allReduceSum(new double[] {1}, "barrier (" + what + ")");
    }

    /**
     * Checks that every rank holds the same {@code value} of {@code what} (a hash of the options, a checksum of the
     * weights); a usage error naming the first rank that differs from rank 0 otherwise, raised on every rank alike.
     */
    public void requireSame(String what, String value) {
        if (world == 1) return;
        String prefix = "aligndistil/check/" + (keySeq++) + "/";
        List<String> keys = new ArrayList<>();
        for (int r = 0; r < world; r++) keys.add(prefix + r);
        List<String> values = new ArrayList<>();
        long t0 = System.nanoTime();
        try {
            store.set(prefix + rank, value);
            store._wait(new StringVector(keys.toArray(String[]::new)), new Milliseconds(timeout.toMillis()));
            for (String k : keys) values.add(store.get_to_str(k));
        } catch (RuntimeException e) {
            throw failed("comparing " + what + " across ranks", e);
        } finally {
            commNanos += System.nanoTime() - t0;
        }
        for (int r = 1; r < world; r++) {
            if (!values.get(r).equals(values.get(0)))
                throw DistException.usage("ranks differ in " + what + ": rank 0 has " + values.get(0) + ", rank " + r + " has " + values.get(r)
                        + " (every rank must be started with the same options and model)");
        }
    }

    /**
     * Leaves this rank's failure in the store, so the ranks that see a collective fail can say why (best effort:
     * nothing is left when the store is gone or the rank is killed).
     */
    public void reportFailure(Throwable t) {
        if (world == 1 || store == null) return;
        try {
            store.set("aligndistil/failed/" + rank, oneLine(t));
        } catch (RuntimeException ignored) {
            // the store (rank 0) is gone: nobody is left to read it
        }
    }

    /**
     * A failure of a collective that libtorch ran on this group's behalf (the Reducer's bucket all-reduces run inside
     * backward), as the same one-line error as this group's own collectives; other exceptions are returned as they are.
     */
    public RuntimeException collectiveFailure(String what, RuntimeException e) {
        if (e instanceof DistException) return e;
        String m = String.valueOf(e.getMessage());
        boolean collective = m.contains("gloo") || m.contains("Gloo") || m.contains("NCCL") || m.contains("c10d") || m.contains("ProcessGroup");
        return collective ? failed(what, e) : e;
    }

    private DistException failed(String what, RuntimeException e) {
        StringBuilder b = new StringBuilder("rank " + rank + ": " + what + " failed: " + oneLine(e));
        String peers = peerFailures();
        b.append("; ").append(peers);
        return DistException.failure(b.toString(), e);
    }

    /** What the store knows of failed ranks, as one clause. */
    private String peerFailures() {
        if (store == null) return "";
        List<String> found = new ArrayList<>();
        try {
            for (int r = 0; r < world; r++) {
                if (r == rank) continue;
                String k = "aligndistil/failed/" + r;
                if (store.check(new StringVector(k))) found.add("rank " + r + " failed: " + store.get_to_str(k));
            }
        } catch (RuntimeException e) {
            return "the rendezvous store (served by rank 0) is unreachable, so rank 0 has stopped";
        }
        if (found.isEmpty()) return "no rank reported an error, so a peer was killed or crashed (the launcher names it)";
        return String.join("; ", found);
    }

    static String oneLine(Throwable e) {
        String m = e.getMessage() == null ? e.getClass().getSimpleName() : e.getMessage();
        m = m.strip();
        int nl = m.indexOf('\n');
        if (nl >= 0) m = m.substring(0, nl).strip();
        // c10d messages end with a C++ stack trace ("Exception raised from ..."): keep the message only
        int raised = m.indexOf("Exception raised from");
        if (raised > 0) m = m.substring(0, raised).strip();
        // Gloo prefixes its messages with the source location of the build ("[/path/to/pair.cc:538] "): drop it
        if (m.startsWith("[") && m.indexOf("] ") > 0 && m.substring(0, m.indexOf("] ")).matches("\\[.*\\.(cc|cpp|h):\\d+")) m = m.substring(m.indexOf("] ") + 2);
        return m.length() > 400 ? m.substring(0, 400) + "..." : m;
    }

    private org.bytedeco.pytorch.ProcessGroup processGroup;

    /**
     * A c10d {@code ProcessGroup} over this group's backend (what libtorch's DDP {@code Reducer} takes), made on first use
     * with its own clone of the store.
     */
    public synchronized org.bytedeco.pytorch.ProcessGroup processGroup() {
        if (world == 1) throw new IllegalStateException("a single process has no process group");
        if (processGroup == null) {
            org.bytedeco.pytorch.ProcessGroup pg = new org.bytedeco.pytorch.ProcessGroup(store.clone(), rank, world);
            org.bytedeco.pytorch.ProcessGroup.BackendType bt = kind == Kind.NCCL ? org.bytedeco.pytorch.ProcessGroup.BackendType.NCCL
                    : org.bytedeco.pytorch.ProcessGroup.BackendType.GLOO;
            pg.setBackend(kind == Kind.NCCL ? torch.DeviceType.CUDA : torch.DeviceType.CPU, bt, new org.bytedeco.pytorch.BackendOptional(backend));
            pg.setDefaultBackend(bt);
            processGroup = pg;
        }
        return processGroup;
    }

    /** Releases the backend and the store (the store's server goes with rank 0's). */
    @Override
    public void close() {
        if (backend != null) backend.close();
        if (store != null) store.close();
    }
}
