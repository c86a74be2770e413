package ai.aligndistil.kernel;

import ai.aligndistil.io.DType;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/**
 * The device side of a {@link FusedDistillLoss.Batch}: workspace, loss and status buffers (allocated once,
 * grown when a larger problem needs more), and for host batches on the CUDA backend a device copy of every
 * tensor (staging; used by {@code replay --backend cuda} and the tests).
 */
final class CudaBatch implements AutoCloseable {
    private final FusedDistillLoss.Batch x;
    private final Arena arena = Arena.ofShared();
    private final MemorySegment hostStatus = arena.allocate(ValueLayout.JAVA_LONG, 4);
    private final MemorySegment hostLoss = arena.allocate(ValueLayout.JAVA_DOUBLE);
    private final MemorySegment wsQuery = arena.allocate(ValueLayout.JAVA_LONG);
    final MemorySegment dLoss;
    final MemorySegment dStatus;
    private MemorySegment workspace;
    private long workspaceBytes;
    // staging copies (host batches only)
    private final MemorySegment[] staged = new MemorySegment[8];

    /**
     * NVTX range around each launch of the fused loss (the launcher ad_fdl_cuda enqueues the four
     * aligndistil_fdl_* kernels; in Nsight Systems they appear under this range on the CPU timeline and, with
     * CUDA projection, on the GPU one).
     */
    static final Nvtx.Range LAUNCH_RANGE = Nvtx.range("fused_distill_loss");

    CudaBatch(FusedDistillLoss.Batch x) {
        Backends.logOnce(Backend.CUDA, x.op().backend() == Backend.CUDA ? "explicit" : "device memory");
        this.x = x;
        this.dLoss = NativeCuda.malloc(8);
        this.dStatus = NativeCuda.malloc(32);
    }

    void launch(long stream) {
        MemorySegment p = x.problemSegment();
        long need = NativeCuda.workspaceBytes(p, wsQuery);
        if (workspace == null || workspaceBytes < need) {
            if (workspace != null) NativeCuda.free(workspace);
            workspace = NativeCuda.malloc(Math.max(need, 256));
            workspaceBytes = Math.max(need, 256);
        }
        NativeCuda.logKernelOnce(p);
        int rc;
        try (Nvtx.Range _ = LAUNCH_RANGE.open()) {
            rc = NativeCuda.fdl(p, workspace.address(), workspaceBytes, dLoss.address(), dStatus.address(), stream);
        }
        if (rc != ProblemStruct.AD_OK) throw x.errorFromStatus(rc, -1, -1, false);
    }

    double synchronize(long stream) {
        NativeCuda.streamSynchronize(stream);
        NativeCuda.copyToHost(hostStatus, dStatus, 32, stream);
        NativeCuda.copyToHost(hostLoss, dLoss, 8, stream);
        long code = hostStatus.getAtIndex(ValueLayout.JAVA_LONG, 0);
        if (code != ProblemStruct.AD_OK)
            throw x.errorFromStatus(code, hostStatus.getAtIndex(ValueLayout.JAVA_LONG, 1), hostStatus.getAtIndex(ValueLayout.JAVA_LONG, 2), false);
        double loss = hostLoss.get(ValueLayout.JAVA_DOUBLE, 0);
        x.setResult(loss, hostStatus.getAtIndex(ValueLayout.JAVA_LONG, 3), -1);
        return loss;
    }

    /** Host batch on the GPU: copy in, launch, wait, copy out. */
    double runStaged() {
        long B = x.batch(), T = x.seq(), V = x.vocab();
        long[] st = x.strides();
        boolean second = x.op().config().variant().needsSecondTeacher();
        boolean inPlace = x.gradSeg().address() == x.studentSeg().address();
        MemorySegment dStudent = stage(0, x.studentSeg(), bytes(B, T, V, st[0], st[1], x.studentType()), true);
        MemorySegment dDpo = stage(1, x.dpoSeg(), bytes(B, T, V, st[2], st[3], x.dpoType()), true);
        MemorySegment dSecond = second ? stage(2, x.secondSeg(), bytes(B, T, V, st[4], st[5], x.secondType()), true) : null;
        MemorySegment dMask = x.maskSeg() == null ? null : stage(3, x.maskSeg(), (B - 1) * st[6] + (T - 1) * st[7] + 1, true);
        long gBytes = bytes(B, T, V, st[8], st[9], x.gradType());
        MemorySegment dGrad = inPlace ? dStudent : stage(4, x.gradSeg(), gBytes, false);
        MemorySegment dW = x.weightSeg() == null ? null : stage(5, x.weightSeg(), B * T * 4, false);
        MemorySegment dTl = x.tokenLossSeg() == null ? null : stage(6, x.tokenLossSeg(), B * T * 4, false);
        MemorySegment dM = x.metricsSeg() == null ? null : stage(7, x.metricsSeg(), B * T * 12, false);

        x.fillProblem();
        MemorySegment p = x.problemSegment();
        ProblemStruct.putPtr(p, ProblemStruct.STUDENT, dStudent);
        ProblemStruct.putPtr(p, ProblemStruct.DPO, dDpo);
        ProblemStruct.putPtr(p, ProblemStruct.SECOND, dSecond);
        ProblemStruct.putPtr(p, ProblemStruct.MASK, dMask);
        ProblemStruct.putPtr(p, ProblemStruct.GRAD, dGrad);
        ProblemStruct.putPtr(p, ProblemStruct.WEIGHT, dW);
        ProblemStruct.putPtr(p, ProblemStruct.TOKEN_LOSS, dTl);
        ProblemStruct.putPtr(p, ProblemStruct.METRICS, dM);
        launch(0L);
        NativeCuda.streamSynchronize(0L);
        NativeCuda.copyToHost(hostStatus, dStatus, 32, 0L);
        long code = hostStatus.getAtIndex(ValueLayout.JAVA_LONG, 0);
        // Copy the outputs back whatever the outcome: on error the kernel zeroed them (the documented state).
        NativeCuda.copyToHost(x.gradSeg(), dGrad, gBytes, 0L);
        if (dW != null) NativeCuda.copyToHost(x.weightSeg(), dW, B * T * 4, 0L);
        if (dTl != null) NativeCuda.copyToHost(x.tokenLossSeg(), dTl, B * T * 4, 0L);
        if (dM != null) NativeCuda.copyToHost(x.metricsSeg(), dM, B * T * 12, 0L);
        if (code != ProblemStruct.AD_OK)
            throw x.errorFromStatus(code, hostStatus.getAtIndex(ValueLayout.JAVA_LONG, 1), hostStatus.getAtIndex(ValueLayout.JAVA_LONG, 2), true);
        NativeCuda.copyToHost(hostLoss, dLoss, 8, 0L);
        double loss = hostLoss.get(ValueLayout.JAVA_DOUBLE, 0);
        long seqs = 0;
        for (long b = 0; b < B; b++) {
            for (long t = 0; t < T; t++) if (x.selected(b, t)) { seqs++; break; }
        }
        x.setResult(loss, hostStatus.getAtIndex(ValueLayout.JAVA_LONG, 3), seqs);
        return loss;
    }

    private static long bytes(long B, long T, long V, long sb, long st, DType dt) {
        return ((B - 1) * sb + (T - 1) * st + V) * dt.byteSize;
    }

    private MemorySegment stage(int slot, MemorySegment host, long bytes, boolean copyIn) {
        MemorySegment d = staged[slot];
        if (d == null || d.byteSize() < bytes) {
            if (d != null) NativeCuda.free(d);
            d = NativeCuda.malloc(Math.max(bytes, 16));
            staged[slot] = d;
        }
        if (copyIn) NativeCuda.copyToDevice(d, host, bytes, 0L);
        return d.asSlice(0, bytes);
    }

    @Override
    public void close() {
        for (int i = 0; i < staged.length; i++) {
            if (staged[i] != null) NativeCuda.free(staged[i]);
            staged[i] = null;
        }
        if (workspace != null) NativeCuda.free(workspace);
        workspace = null;
        NativeCuda.free(dLoss);
        NativeCuda.free(dStatus);
        arena.close();
    }
}
