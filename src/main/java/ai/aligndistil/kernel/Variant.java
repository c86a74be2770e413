package ai.aligndistil.kernel;

import java.util.Arrays;
import java.util.Locale;
import java.util.stream.Collectors;

/**
 * The teacher constructions of AlignDistil (shared/docs/aligndistil-spec.md section 2.5). With z_d the DPO
 * logits and z_2 the second teacher (reverse DPO or reference), alpha the per-token weight:
 * <pre>
 *   variant       weight alpha                         teacher z*                      coefficient
 *   aligndistil   beta2 * sum|p_d - p_2| + epsilon     z_d + alpha (z_d - z_2)         beta / alpha   (the method)
 *   contrast      beta / beta2                         z_d + alpha (z_d - z_2)         beta2
 *   adaptive      beta2 * sum|p_d - p_2| + epsilon     alpha z_d + (1 - alpha) z_2     beta / alpha
 *   theorem1      beta / beta2                         alpha z_d + (1 - alpha) z_2     beta2
 *   gkd           1                                    z_d (T ignored)                 1              (baseline)
 * </pre>
 * The official code's names are theorem1_contrast (contrast) and theorem1_adaptive (adaptive); both are
 * accepted by {@link #parse}.
 */
public enum Variant {
    ALIGNDISTIL(0, "reverse_logits", true),
    CONTRAST(1, "reverse_logits", false),
    ADAPTIVE(2, "reference_logits", true),
    THEOREM1(3, "reference_logits", false),
    GKD(4, null, false);

    /** The native code (AD_VARIANT_*). */
    public final int code;
    /** Name of the second teacher's tensor in a replay file, or null when the variant has none. */
    public final String secondTensorName;
    /** Whether alpha adapts per token (needs the total variation between the two teachers). */
    public final boolean adaptive;
    /** How error messages name the second teacher ("second-teacher (reverse_logits)"); built once, not per call. */
    final String secondLabel;

    Variant(int code, String secondTensorName, boolean adaptive) {
        this.code = code;
        this.secondTensorName = secondTensorName;
        this.adaptive = adaptive;
        this.secondLabel = "second-teacher (" + secondTensorName + ")";
    }

    public boolean needsSecondTeacher() { return secondTensorName != null; }

    /** The lower-case name used on the command line and in logs. */
    public String id() { return name().toLowerCase(Locale.ROOT); }

    public static Variant parse(String s) {
        String k = s.toLowerCase(Locale.ROOT).replace('-', '_');
        return switch (k) {
            case "aligndistil" -> ALIGNDISTIL;
            case "contrast", "theorem1_contrast" -> CONTRAST;
            case "adaptive", "theorem1_adaptive" -> ADAPTIVE;
            case "theorem1" -> THEOREM1;
            case "gkd" -> GKD;
            default -> throw new IllegalArgumentException("unknown variant '" + s + "' (expected one of "
                    + Arrays.stream(values()).map(Variant::id).collect(Collectors.joining(", ")) + ")");
        };
    }

    @Override
    public String toString() { return id(); }
}
