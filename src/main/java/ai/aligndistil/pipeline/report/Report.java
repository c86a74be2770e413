package ai.aligndistil.pipeline.report;

import java.util.Map;

/** Text tables of evaluation results. */
public final class Report {
    private Report() {}

    static final String[][] COLUMNS = {
            {"reward", "true reward"}, {"reward_std", "(sd)"}, {"win_rate", "win vs init"}, {"kl_init", "KL(.||init)"},
            {"kl_dpo", "KL(.||dpo)"}, {"length", "length"}};

    /** A fixed-width table of {@code result.models}, then the reward accuracy, if present. */
    @SuppressWarnings("unchecked")
    public static String evalTable(Map<String, Object> result) {
        StringBuilder b = new StringBuilder();
        Map<String, Object> models = (Map<String, Object>) result.get("models");
        if (models != null && !models.isEmpty()) {
            int w = 10;
            for (String k : models.keySet()) w = Math.max(w, k.length());
            b.append(String.format("%-" + w + "s", "model"));
            for (String[] c : COLUMNS) b.append(String.format(" %12s", c[1]));
            b.append('\n');
            for (var e : models.entrySet()) {
                Map<String, Object> m = (Map<String, Object>) e.getValue();
                b.append(String.format("%-" + w + "s", e.getKey()));
                for (String[] c : COLUMNS) b.append(String.format(" %12s", fmt(m.get(c[0]), c[0])));
                b.append('\n');
            }
        }
        Map<String, Object> acc = (Map<String, Object>) result.get("reward_accuracy");
        if (acc != null) {
            b.append(String.format("reward accuracy on %s held-out pairs (pair labels): DPO implicit %s, contrastive %s%n", acc.get("pairs"),
                    pct(acc.get("dpo_implicit_accuracy")), pct(acc.get("contrastive_accuracy"))));
            if (acc.containsKey("contrastive_accuracy_true_order"))
                b.append(String.format("reward accuracy against the true-reward order: DPO implicit %s, contrastive %s%n",
                        pct(acc.get("dpo_implicit_accuracy_true_order")), pct(acc.get("contrastive_accuracy_true_order"))));
        }
        return b.toString();
    }

    static String fmt(Object v, String key) {
        if (!(v instanceof Number n)) return "-";
        if (key.equals("win_rate")) return pct(v);
        return String.format("%.3f", n.doubleValue());
    }

    static String pct(Object v) {
        return v instanceof Number n ? String.format("%.1f %%", 100 * n.doubleValue()) : "-";
    }
}
