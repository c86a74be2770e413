package ai.aligndistil.pipeline.data;

import java.io.BufferedReader;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import ai.aligndistil.io.Json;
import ai.aligndistil.model.ChatTemplate;
import ai.aligndistil.model.ChatTemplate.Message;
import ai.aligndistil.model.HfTokenizer;

/**
 * JSON-lines data of the pipeline.
 *
 * <p>Preference lines come in two layouts: UltraFeedback-binarized ({@code prompt} a string,
 * {@code chosen}/{@code rejected} lists of {@code {role, content}} messages ending with the assistant's
 * answer) and flat ({@code prompt}, {@code chosen}, {@code rejected} strings). A prompt may also be given as a
 * list of messages ({@code prompt} or {@code messages}). SFT lines are {@code {prompt, response}},
 * {@code {prompt, completion}}, {@code {messages: [...]}} ending with an assistant turn, or a preference line
 * (its chosen answer). Prompt lines ({@code {prompt}} or {@code {messages}}) feed on-policy sampling and
 * evaluation; preference lines are accepted there too.
 *
 * <p>A malformed line is a {@link DataException} naming the file and line. With {@code skipBad} such lines are
 * skipped and counted instead; blank lines are ignored.
 */
public final class DataFiles {
    private DataFiles() {}

    /** A malformed data line, reported as {@code file:line: problem}. */
    public static final class DataException extends IllegalArgumentException {
        private static final long serialVersionUID = 1L;
        public final Path file;
        public final long line;

        public DataException(Path file, long line, String problem) {
            super(file + ":" + line + ": " + problem);
            this.file = file;
            this.line = line;
        }
    }

    /** A preference pair: the prompt conversation (without the answer) and the two answers. */
    public record Pair(List<Message> prompt, String chosen, String rejected, long line) {
        public Pair swapped() { return new Pair(prompt, rejected, chosen, line); }
        public List<Message> chosenConversation() { return with(prompt, chosen); }
        public List<Message> rejectedConversation() { return with(prompt, rejected); }
    }

    /** A supervised example: prompt conversation and the answer. */
    public record Sft(List<Message> prompt, String response, long line) {
        public List<Message> conversation() { return with(prompt, response); }
    }

    /** What a load produced: the records, the malformed lines skipped (0 unless skipping), and their messages. */
    public record Loaded<T>(List<T> records, int skipped, List<String> problems) {}

    static List<Message> with(List<Message> prompt, String answer) {
        List<Message> c = new ArrayList<>(prompt);
        c.add(Message.assistant(answer));
        return c;
    }

    private interface LineParser<T> { T parse(Map<String, Object> j, long line); }

    public static Loaded<Pair> pairs(Path file, boolean skipBad) throws IOException {
        return read(file, skipBad, (j, n) -> pair(file, j, n));
    }

    public static Loaded<Sft> sft(Path file, boolean skipBad) throws IOException {
        return read(file, skipBad, (j, n) -> sftLine(file, j, n));
    }

    public static Loaded<List<Message>> prompts(Path file, boolean skipBad) throws IOException {
        return read(file, skipBad, (j, n) -> promptOf(file, j, n));
    }

    private static <T> Loaded<T> read(Path file, boolean skipBad, LineParser<T> parser) throws IOException {
        if (!Files.isRegularFile(file)) throw new IOException(file + ": no such data file");
        List<T> out = new ArrayList<>();
        List<String> problems = new ArrayList<>();
        try (BufferedReader r = Files.newBufferedReader(file, StandardCharsets.UTF_8)) {
            String s;
            long n = 0;
            while ((s = r.readLine()) != null) {
                n++;
                if (s.isBlank()) continue;
                try {
                    Map<String, Object> j;
                    try {
                        j = Json.parseObject(s);
                    } catch (Json.JsonException e) {
                        throw new DataException(file, n, "not a JSON object: " + e.getMessage());
                    }
                    out.add(parser.parse(j, n));
                } catch (DataException e) {
                    if (!skipBad) throw e;
                    problems.add(e.getMessage());
                }
            }
        }
        return new Loaded<>(out, problems.size(), problems);
    }

    private static Pair pair(Path f, Map<String, Object> j, long n) {
        for (String k : new String[] {"chosen", "rejected"}) if (!j.containsKey(k)) throw new DataException(f, n, "missing key '" + k + "'");
        Object c = j.get("chosen"), r = j.get("rejected");
        List<Message> prompt;
        String chosen, rejected;
        if (c instanceof List<?> cl && r instanceof List<?> rl) {
            List<Message> cm = messages(f, n, "chosen", cl), rm = messages(f, n, "rejected", rl);
            chosen = finalAnswer(f, n, "chosen", cm);
            rejected = finalAnswer(f, n, "rejected", rm);
            prompt = cm.subList(0, cm.size() - 1);
            if (prompt.isEmpty()) prompt = promptOf(f, j, n);
        } else if (c instanceof String cs && r instanceof String rs) {
            chosen = cs;
            rejected = rs;
            prompt = promptOf(f, j, n);
        } else {
            throw new DataException(f, n, "'chosen' and 'rejected' must both be strings or both be lists of messages");
        }
        if (prompt.isEmpty()) throw new DataException(f, n, "empty prompt");
        return new Pair(List.copyOf(prompt), chosen, rejected, n);
    }

    private static Sft sftLine(Path f, Map<String, Object> j, long n) {
        if (j.get("response") instanceof String s) return new Sft(promptOf(f, j, n), s, n);
        if (j.get("completion") instanceof String s) return new Sft(promptOf(f, j, n), s, n);
        if (j.get("messages") instanceof List<?> l) {
            List<Message> m = messages(f, n, "messages", l);
            String a = finalAnswer(f, n, "messages", m);
            if (m.size() < 2) throw new DataException(f, n, "'messages' has no prompt before the answer");
            return new Sft(List.copyOf(m.subList(0, m.size() - 1)), a, n);
        }
        if (j.containsKey("chosen")) {
            Pair p = pair(f, j, n);
            return new Sft(p.prompt(), p.chosen(), n);
        }
        throw new DataException(f, n, "expected 'response', 'completion', 'messages' or 'chosen'");
    }

    private static List<Message> promptOf(Path f, Map<String, Object> j, long n) {
        Object p = j.containsKey("prompt") ? j.get("prompt") : j.get("messages");
        if (p instanceof String s) {
            if (s.isEmpty()) throw new DataException(f, n, "empty prompt");
            return List.of(Message.user(s));
        }
        if (p instanceof List<?> l) {
            List<Message> m = messages(f, n, "prompt", l);
            if (!m.isEmpty() && m.get(m.size() - 1).role().equals("assistant")) m = m.subList(0, m.size() - 1);
            if (m.isEmpty()) throw new DataException(f, n, "empty prompt");
            return List.copyOf(m);
        }
        if (j.get("chosen") instanceof List<?> l) {
            List<Message> m = messages(f, n, "chosen", l);
            if (m.size() >= 2) return List.copyOf(m.subList(0, m.size() - 1));
        }
        throw new DataException(f, n, p == null ? "missing key 'prompt'" : "'prompt' must be a string or a list of messages");
    }

    private static List<Message> messages(Path f, long n, String key, List<?> l) {
        List<Message> out = new ArrayList<>();
        for (int i = 0; i < l.size(); i++) {
            if (!(l.get(i) instanceof Map<?, ?> m) || !(m.get("role") instanceof String role) || !(m.get("content") instanceof String content))
                throw new DataException(f, n, "'" + key + "'[" + i + "] must be an object with string 'role' and 'content'");
            if (!role.equals("system") && !role.equals("user") && !role.equals("assistant"))
                throw new DataException(f, n, "'" + key + "'[" + i + "] has unknown role '" + role + "'");
            out.add(new Message(role, content));
        }
        return out;
    }

    private static String finalAnswer(Path f, long n, String key, List<Message> m) {
        if (m.isEmpty() || !m.get(m.size() - 1).role().equals("assistant"))
            throw new DataException(f, n, "'" + key + "' must end with an assistant message");
        return m.get(m.size() - 1).content();
    }

    // ------------------------------------------------------------------ tokenisation

    /** Counts of what tokenisation did to the data (spec 6.5 / 9.9). */
    public static final class Counts {
        public int kept, truncated, dropped;

        @Override
        public String toString() { return kept + " kept, " + truncated + " truncated to max-len (last token forced to EOS), " + dropped + " dropped (prompt too long)"; }
    }

    /** Tokenised SFT examples (prompt too long: dropped; too long overall: truncated with a forced EOS). */
    public static List<ChatTemplate.Example> tokenizeSft(List<Sft> data, ChatTemplate tpl, HfTokenizer tok, int maxLen, Counts c) {
        List<ChatTemplate.Example> out = new ArrayList<>();
        for (Sft s : data) {
            ChatTemplate.Example e = tokenize(tpl, tok, s.conversation(), maxLen, c);
            if (e != null) out.add(e);
        }
        return out;
    }

    /** A tokenised pair, or both dropped together. */
    public record TokenPair(ChatTemplate.Example chosen, ChatTemplate.Example rejected) {}

    public static List<TokenPair> tokenizePairs(List<Pair> data, ChatTemplate tpl, HfTokenizer tok, int maxLen, Counts c) {
        List<TokenPair> out = new ArrayList<>();
        for (Pair p : data) {
            ChatTemplate.Example a = tokenize(tpl, tok, p.chosenConversation(), maxLen, c);
            ChatTemplate.Example b = a == null ? null : tokenize(tpl, tok, p.rejectedConversation(), maxLen, c);
            if (a != null && b != null) out.add(new TokenPair(a, b));
            else if (a != null) c.kept--;
        }
        return out;
    }

    public static ChatTemplate.Example tokenize(ChatTemplate tpl, HfTokenizer tok, List<Message> conv, int maxLen, Counts c) {
        ChatTemplate.Example e = tpl.tokenize(tok, conv, maxLen);
        if (e == null) {
            c.dropped++;
            return null;
        }
        long full = tok.encode(tpl.promptText(conv)).length + (long) tok.encode(tpl.responseText(conv)).length;
        if (full > maxLen) c.truncated++;
        c.kept++;
        return e;
    }

    /** Prompt ids for sampling, cut on the right to {@code promptMaxLen} tokens (spec 9.9). */
    public static long[] promptIds(ChatTemplate tpl, HfTokenizer tok, List<Message> prompt, int promptMaxLen) {
        long[] p = tok.encode(tpl.promptText(prompt));
        return p.length > promptMaxLen ? java.util.Arrays.copyOf(p, promptMaxLen) : p;
    }
}
