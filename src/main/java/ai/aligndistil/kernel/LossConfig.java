package ai.aligndistil.kernel;

/**
 * The parameters of the fused AlignDistil loss. Defaults are those of the official off-policy script:
 * beta 0.1, beta2 10, epsilon 1e-3, teacher temperature 1, student temperature 1, length normalisation on.
 *
 * @param variant            teacher construction, see {@link Variant}
 * @param beta               beta_0 of the DPO models ({@code --beta}); must be finite and > 0
 * @param beta2              scale of the adaptive weight, or the KL coefficient of the constant variants ({@code --beta2})
 * @param epsilon            floor of the adaptive weight (the official code hard-codes 1e-3)
 * @param temperature        teacher temperature T (the teacher logits are divided by it; gkd ignores it)
 * @param studentTemperature student temperature Ts (1: the student is not tempered; the official on-policy trainer uses Ts = T)
 * @param lengthNorm         divide each sequence's sum by its number of selected rows ({@code --reward_len_norm})
 */
public record LossConfig(Variant variant, double beta, double beta2, double epsilon, double temperature,
                         double studentTemperature, boolean lengthNorm) {

    public static final double DEFAULT_BETA = 0.1;
    public static final double DEFAULT_BETA2 = 10.0;
    public static final double DEFAULT_EPSILON = 1e-3;

    public LossConfig {
        if (variant == null) throw new IllegalArgumentException("variant must not be null");
        positive("beta", beta);
        positive("beta2", beta2);
        positive("epsilon", epsilon);
        positive("temperature", temperature);
        positive("studentTemperature", studentTemperature);
    }

    private static void positive(String name, double v) {
        if (!Double.isFinite(v) || v <= 0) throw new IllegalArgumentException(name + " must be finite and > 0, got " + v);
    }

    /** The official defaults with the given variant. */
    public static LossConfig defaults(Variant variant) {
        return new LossConfig(variant, DEFAULT_BETA, DEFAULT_BETA2, DEFAULT_EPSILON, 1.0, 1.0, true);
    }

    public static LossConfig defaults() { return defaults(Variant.ALIGNDISTIL); }

    public LossConfig withVariant(Variant v) { return new LossConfig(v, beta, beta2, epsilon, temperature, studentTemperature, lengthNorm); }
    public LossConfig withBeta(double b) { return new LossConfig(variant, b, beta2, epsilon, temperature, studentTemperature, lengthNorm); }
    public LossConfig withBeta2(double b2) { return new LossConfig(variant, beta, b2, epsilon, temperature, studentTemperature, lengthNorm); }
    public LossConfig withEpsilon(double e) { return new LossConfig(variant, beta, beta2, e, temperature, studentTemperature, lengthNorm); }
    public LossConfig withTemperature(double t) { return new LossConfig(variant, beta, beta2, epsilon, t, studentTemperature, lengthNorm); }
    public LossConfig withStudentTemperature(double ts) { return new LossConfig(variant, beta, beta2, epsilon, temperature, ts, lengthNorm); }
    public LossConfig withLengthNorm(boolean on) { return new LossConfig(variant, beta, beta2, epsilon, temperature, studentTemperature, on); }
}
