package ai.aligndistil.kernel;

/** The contract on the reference itself (errors, aliasing, strides, reductions; the comparisons are trivially equal). */
class ReferenceBackendTest extends FusedDistillLossContract {
    @Override
    Backend backend() { return Backend.REFERENCE; }
}
