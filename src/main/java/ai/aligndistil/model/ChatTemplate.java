package ai.aligndistil.model;

import java.util.ArrayList;
import java.util.List;
import java.util.Objects;

/**
 * The ChatML format of Qwen instruct models and the prompt/response split of spec section 6.5.
 *
 * <p>Each message renders as {@code <|im_start|>{role}\n{content}<|im_end|>\n}; a conversation that does not
 * start with a system message gets the default system prompt (Qwen2.5's, unless configured otherwise), and
 * the generation prompt is {@code <|im_start|>assistant\n}.
 *
 * <p>For training data: prompt = the conversation without its final assistant turn, with the generation
 * prompt; response = the rest of the templated conversation, right-stripped of {@code "\n"}, with
 * {@code " " + EOS} appended if it does not already end with EOS. Prompt and response are tokenised
 * <i>separately</i> (no special tokens added) and their ids concatenated, so the boundary is exact; the
 * result is truncated to {@code maxLen} and its last token forced to EOS; prompts of at least
 * {@code maxLen - 2} tokens are dropped.
 */
public final class ChatTemplate {
    /** Qwen2.5's default system prompt. */
    public static final String QWEN25_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";
    public static final String IM_START = "<|im_start|>";
    public static final String IM_END = "<|im_end|>";

    /** One chat message; role is {@code system}, {@code user} or {@code assistant}. */
    public record Message(String role, String content) {
        public Message {
            Objects.requireNonNull(role, "role");
            Objects.requireNonNull(content, "content");
        }

        public static Message system(String c) { return new Message("system", c); }
        public static Message user(String c) { return new Message("user", c); }
        public static Message assistant(String c) { return new Message("assistant", c); }
    }

    /**
     * A tokenised training example.
     *
     * @param ids          prompt ids followed by response ids (ends with EOS)
     * @param promptLength how many leading ids are the prompt
     */
    public record Example(long[] ids, int promptLength) {}

    private final String defaultSystem;
    private final String eos;

    /**
     * @param defaultSystem system prompt inserted when a conversation has none (null: insert nothing)
     * @param eos           the end-of-sequence string ({@code <|im_end|>} for Qwen instruct models)
     */
    public ChatTemplate(String defaultSystem, String eos) {
        this.defaultSystem = defaultSystem;
        this.eos = Objects.requireNonNull(eos);
    }

    /** Qwen2.5-Instruct's template: default system prompt, EOS {@code <|im_end|>}. */
    public static ChatTemplate qwen25() { return new ChatTemplate(QWEN25_SYSTEM, IM_END); }

    public String eos() { return eos; }

    /** The templated text of a conversation, optionally followed by the generation prompt. */
    public String render(List<Message> messages, boolean addGenerationPrompt) {
        StringBuilder b = new StringBuilder();
        if (defaultSystem != null && (messages.isEmpty() || !messages.get(0).role().equals("system")))
            b.append(IM_START).append("system\n").append(defaultSystem).append(IM_END).append('\n');
        for (Message m : messages) b.append(IM_START).append(m.role()).append('\n').append(m.content()).append(IM_END).append('\n');
        if (addGenerationPrompt) b.append(IM_START).append("assistant\n");
        return b.toString();
    }

    /** The prompt text of a conversation whose last message is the assistant's answer (or of a bare prompt). */
    public String promptText(List<Message> conversation) {
        return render(withoutFinalAnswer(conversation), true);
    }

    /** The response text: the rest of the templated conversation after {@link #promptText}, per spec 6.5. */
    public String responseText(List<Message> conversation) {
        if (conversation.isEmpty() || !conversation.get(conversation.size() - 1).role().equals("assistant"))
            throw new IllegalArgumentException("the conversation must end with an assistant message");
        String prompt = promptText(conversation);
        String full = render(conversation, false);
        if (!full.startsWith(prompt)) throw new IllegalStateException("template prompt is not a prefix of the conversation");
        String response = full.substring(prompt.length());
        int end = response.length();
        while (end > 0 && response.charAt(end - 1) == '\n') end--;
        response = response.substring(0, end);
        if (!response.endsWith(eos)) response = response + " " + eos;
        return response;
    }

    /**
     * Tokenises a conversation into a training example (spec 6.5), or returns null when the prompt alone has
     * at least {@code maxLen - 2} tokens (such samples are dropped).
     */
    public Example tokenize(HfTokenizer tok, List<Message> conversation, int maxLen) {
        long eosId = tok.requireTokenId(eos);
        long[] p = tok.encode(promptText(conversation));
        if (p.length >= maxLen - 2) return null;
        long[] r = tok.encode(responseText(conversation));
        int n = Math.min(maxLen, p.length + r.length);
        long[] ids = new long[n];
        System.arraycopy(p, 0, ids, 0, p.length);
        System.arraycopy(r, 0, ids, p.length, n - p.length);
        ids[n - 1] = eosId;
        return new Example(ids, p.length);
    }

    /** Prompt ids for generation (on-policy sampling). */
    public long[] promptIds(HfTokenizer tok, List<Message> messages) {
        return tok.encode(promptText(messages));
    }

    private static List<Message> withoutFinalAnswer(List<Message> c) {
        if (!c.isEmpty() && c.get(c.size() - 1).role().equals("assistant")) return new ArrayList<>(c.subList(0, c.size() - 1));
        return c;
    }
}
