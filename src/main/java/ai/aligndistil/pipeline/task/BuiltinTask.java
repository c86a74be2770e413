package ai.aligndistil.pipeline.task;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import ai.aligndistil.io.Json;
import ai.aligndistil.model.HfCheckpoint;
import ai.aligndistil.train.Rng;

/**
 * The built-in task: a toy language whose true reward is known, generated from a seed.
 *
 * <ul>
 * <li><b>Vocabulary</b>: the specials {@code <|endoftext|>}=0, {@code <|im_start|>}=1, {@code <|im_end|>}=2 (EOS),
 * {@code [UNK]}=3, the role words {@code system}=4, {@code user}=5, {@code assistant}=6, then {@link #words()} two-letter
 * syllables; a WordLevel {@code tokenizer.json} (whitespace split) is written for it, so the pipeline reads the
 * task's data as text through the same tokenizer path as for real models. The model's vocabulary is padded to a
 * multiple of 8 (like Qwen's padded vocabulary).</li>
 * <li><b>Base language</b>: a first-order Markov chain over the words with peaked random transitions and a
 * per-word stop probability; prompts are 3 to 6 words of it, responses continue the prompt and end with EOS
 * (at most {@link #maxResponseWords()} words). The initial policy is trained on it by {@code sft}.</li>
 * <li><b>Hidden reward</b>: a score per token in context, {@code s(prev, w) = a[w] - m + c * b[prev][w]} summed over
 * the response's words ({@code a}, {@code b} standard normal, {@code c} = {@link #CONTEXT_WEIGHT}, {@code m} the base
 * language's mean per-word score, so the reward is length-neutral under the initial policy), where {@code prev} is the previous word (the prompt's last word for the first one);
 * any non-word token in a response (a special or role token) scores {@link #INVALID_SCORE}; EOS scores 0.</li>
 * </ul>
 * Everything is a deterministic function of the seed.
 */
public final class BuiltinTask {
    public static final String[] SPECIALS = {"<|endoftext|>", "<|im_start|>", "<|im_end|>", "[UNK]", "system", "user", "assistant"};
    public static final int FIRST_WORD = SPECIALS.length;
    public static final long EOS = 2, PAD = 0;
    public static final double INVALID_SCORE = -2.0;

    private final long seed;
    private final String[] words;
    private final double[][] transition;   // [W][W] probabilities of the next word
    private final double[] stop;           // [W] probability that a response ends after this word
    private final double[] unigram;        // [W] reward of a word
    private final double[][] bigram;       // [W][W] reward of a word after a word
    private final double contextWeight;
    private final int maxResponseWords;
    private final double scoreOffset;

    private BuiltinTask(long seed, String[] words, double[][] transition, double[] stop, double[] unigram, double[][] bigram,
                        double contextWeight, int maxResponseWords, double scoreOffset) {
        this.scoreOffset = scoreOffset;
        this.seed = seed;
        this.words = words;
        this.transition = transition;
        this.stop = stop;
        this.unigram = unigram;
        this.bigram = bigram;
        this.contextWeight = contextWeight;
        this.maxResponseWords = maxResponseWords;
    }

    /** The task of a seed with {@code numWords} words. */
    public static BuiltinTask create(long seed, int numWords) {
        Rng r = new Rng(seed ^ 0x5DEECE66DL);
        String cons = "bdfgklmnprstvz", vow = "aeiou";
        List<String> all = new ArrayList<>();
        for (char c : cons.toCharArray()) for (char v : vow.toCharArray()) all.add("" + c + v);
        int[] order = new int[all.size()];
        for (int i = 0; i < order.length; i++) order[i] = i;
        r.shuffle(order);
        if (numWords > all.size()) throw new IllegalArgumentException("at most " + all.size() + " words");
        String[] words = new String[numWords];
        for (int i = 0; i < numWords; i++) words[i] = all.get(order[i]);
        double[][] tr = new double[numWords][numWords];
        for (int i = 0; i < numWords; i++) {
            double sum = 0;
            for (int j = 0; j < numWords; j++) sum += tr[i][j] = Math.exp(1.6 * gaussian(r));
            for (int j = 0; j < numWords; j++) tr[i][j] /= sum;
        }
        double[] stop = new double[numWords];
        for (int i = 0; i < numWords; i++) stop[i] = 0.06 + 0.16 * r.nextDouble();
        double[] uni = new double[numWords];
        for (int i = 0; i < numWords; i++) uni[i] = gaussian(r);
        double[][] bi = new double[numWords][numWords];
        for (int i = 0; i < numWords; i++) for (int j = 0; j < numWords; j++) bi[i][j] = gaussian(r);
        BuiltinTask raw = new BuiltinTask(seed, words, tr, stop, uni, bi, CONTEXT_WEIGHT, 14, 0);
        // Length-neutral reward: subtract the base language's mean per-word score (measured on CENTRING_SAMPLES
        // responses of its own, seeded), so a word is worth about 0 on average under the initial policy and only
        // the choice of word in its context is rewarded, not the number of words.
        double offset = raw.basePerWordScore(CENTRING_SAMPLES, new Rng(seed * 31 + 11));
        double[] centred = uni.clone();
        for (int i = 0; i < numWords; i++) centred[i] -= offset;
        return new BuiltinTask(seed, words, tr, stop, centred, bi, CONTEXT_WEIGHT, 14, offset);
    }

    /** Weight of the context score b[prev][w] against the word's own score a[w]: equal, so word choice in context carries the signal. */
    public static final double CONTEXT_WEIGHT = 1.0;
    /** Base-language responses whose mean per-word score centres the reward. */
    static final int CENTRING_SAMPLES = 20000;

    /** Mean score per word of {@code n} responses of the base language (each after a fresh prompt). */
    public double basePerWordScore(int n, Rng r) {
        double sum = 0;
        long words = 0;
        for (int i = 0; i < n; i++) {
            int[] p = samplePrompt(r);
            int prev = p[p.length - 1];
            for (int w : sampleResponse(p, r)) {
                sum += score(prev, w);
                prev = w;
                words++;
            }
        }
        return words == 0 ? 0 : sum / words;
    }

    /** The constant subtracted from every word's score to centre the reward (see {@link #create}). */
    public double scoreOffset() { return scoreOffset; }

    static double gaussian(Rng r) {
        double u = Math.max(1e-300, r.nextDouble()), v = r.nextDouble();
        return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
    }

    public long seed() { return seed; }
    public String[] words() { return words.clone(); }
    public int numWords() { return words.length; }
    public int maxResponseWords() { return maxResponseWords; }

    /** Tokenizer size (specials + words). */
    public int tokenizerSize() { return FIRST_WORD + words.length; }

    /** The model's (padded) vocabulary size. */
    public int modelVocab() { return (tokenizerSize() + 7) / 8 * 8; }

    /** Word index of a token id, or -1 for a non-word token. */
    public int wordOf(long id) {
        long w = id - FIRST_WORD;
        return w >= 0 && w < words.length ? (int) w : -1;
    }

    public long tokenOf(int word) { return FIRST_WORD + word; }

    // ------------------------------------------------------------------ the base language

    /** A prompt of 3 to 6 words. */
    public int[] samplePrompt(Rng r) {
        int n = 3 + r.nextInt(4);
        int[] p = new int[n];
        p[0] = r.nextInt(words.length);
        for (int i = 1; i < n; i++) p[i] = draw(transition[p[i - 1]], r);
        return p;
    }

    /** A response of the base language to a prompt (words only; EOS implied). */
    public int[] sampleResponse(int[] prompt, Rng r) {
        List<Integer> out = new ArrayList<>();
        int prev = prompt[prompt.length - 1];
        while (out.size() < maxResponseWords) {
            if (!out.isEmpty() && r.nextDouble() < stop[prev]) break;
            prev = draw(transition[prev], r);
            out.add(prev);
        }
        return out.stream().mapToInt(Integer::intValue).toArray();
    }

    private static int draw(double[] p, Rng r) {
        double u = r.nextDouble(), c = 0;
        for (int i = 0; i < p.length; i++) {
            c += p[i];
            if (u < c) return i;
        }
        return p.length - 1;
    }

    public String text(int[] ws) {
        StringBuilder b = new StringBuilder();
        for (int w : ws) {
            if (b.length() > 0) b.append(' ');
            b.append(words[w]);
        }
        return b.toString();
    }

    /** Token ids to text with this task's vocabulary (specials spelled out, EOS and what follows dropped). */
    public String responseText(long[] ids) {
        StringBuilder b = new StringBuilder();
        for (long id : ids) {
            if (id == EOS) break;
            if (b.length() > 0) b.append(' ');
            int w = wordOf(id);
            b.append(w >= 0 ? words[w] : id >= 0 && id < SPECIALS.length ? SPECIALS[(int) id] : "[UNK]");
        }
        return b.toString();
    }

    /** Words of a text (unknown words are -1). */
    public int[] parseWords(String text) {
        String[] parts = text.trim().isEmpty() ? new String[0] : text.trim().split("\\s+");
        int[] out = new int[parts.length];
        for (int i = 0; i < parts.length; i++) {
            out[i] = -1;
            for (int w = 0; w < words.length; w++) if (words[w].equals(parts[i])) out[i] = w;
        }
        return out;
    }

    // ------------------------------------------------------------------ the hidden reward

    /** Score of word {@code w} after word {@code prev} (prev -1: no context). */
    public double score(int prev, int w) {
        return unigram[w] + (prev >= 0 ? contextWeight * bigram[prev][w] : 0);
    }

    /**
     * True reward of a response given as token ids (reading stops at the first EOS).
     *
     * @param lastPromptWord the prompt's last word (index), or -1
     */
    public double reward(int lastPromptWord, long[] response) {
        double r = 0;
        int prev = lastPromptWord;
        for (long id : response) {
            if (id == EOS) break;
            int w = wordOf(id);
            if (w < 0) {
                r += INVALID_SCORE;
                continue;
            }
            r += score(prev, w);
            prev = w;
        }
        return r;
    }

    /** True reward of a response given as text, after a prompt given as text. */
    public double reward(String promptText, String responseText) {
        int[] p = parseWords(promptText);
        int last = p.length == 0 ? -1 : p[p.length - 1];
        int[] ws = parseWords(responseText);
        double r = 0;
        int prev = last;
        for (int w : ws) {
            if (w < 0) {
                r += INVALID_SCORE;
                continue;
            }
            r += score(prev, w);
            prev = w;
        }
        return r;
    }

    // ------------------------------------------------------------------ files

    /** Writes a WordLevel tokenizer.json for the vocabulary. */
    public void writeTokenizer(Path file) throws IOException {
        StringBuilder vocab = new StringBuilder("{");
        for (int i = 0; i < tokenizerSize(); i++) {
            if (i > 0) vocab.append(',');
            Json.quote(vocab, i < FIRST_WORD ? SPECIALS[i] : words[i - FIRST_WORD]);
            vocab.append(':').append(i);
        }
        vocab.append('}');
        String special = "\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"normalized\":false,\"special\":true";
        StringBuilder added = new StringBuilder();
        for (int i = 0; i < 3; i++) {
            if (i > 0) added.append(',');
            added.append("{\"id\":").append(i).append(",\"content\":");
            Json.quote(added, SPECIALS[i]);
            added.append(',').append(special).append('}');
        }
        String json = "{\"version\":\"1.0\",\"truncation\":null,\"padding\":null,\"added_tokens\":[" + added + "],"
                + "\"normalizer\":null,\"pre_tokenizer\":{\"type\":\"WhitespaceSplit\"},\"post_processor\":null,"
                + "\"decoder\":null,\"model\":{\"type\":\"WordLevel\",\"vocab\":" + vocab + ",\"unk_token\":\"[UNK]\"}}";
        HfCheckpoint.writeAtomically(file, json + "\n");
    }

    /** The task's config.json for a small Qwen2-architecture model. */
    public Map<String, Object> modelConfig(int hidden, int layers) {
        Map<String, Object> j = new LinkedHashMap<>();
        j.put("architectures", List.of("Qwen2ForCausalLM"));
        j.put("model_type", "qwen2");
        j.put("vocab_size", (long) modelVocab());
        j.put("hidden_size", (long) hidden);
        j.put("intermediate_size", (long) (2 * hidden));
        j.put("num_hidden_layers", (long) layers);
        j.put("num_attention_heads", 4L);
        j.put("num_key_value_heads", 2L);
        j.put("rms_norm_eps", 1e-6);
        j.put("rope_theta", 10000.0);
        j.put("tie_word_embeddings", true);
        j.put("hidden_act", "silu");
        j.put("max_position_embeddings", 128L);
        j.put("torch_dtype", "float32");
        j.put("eos_token_id", EOS);
        j.put("pad_token_id", PAD);
        return j;
    }

    /** task.json: everything needed to recompute the reward (the seed regenerates the rest; the tables are stored for readers). */
    public void save(Path file) throws IOException {
        Map<String, Object> j = new LinkedHashMap<>();
        j.put("kind", "aligndistil-builtin-task");
        j.put("seed", seed);
        j.put("num_words", (long) words.length);
        j.put("words", List.of(words));
        j.put("max_response_words", (long) maxResponseWords);
        j.put("context_weight", contextWeight);
        j.put("score_offset", scoreOffset);
        j.put("invalid_score", INVALID_SCORE);
        List<Object> uni = new ArrayList<>();
        for (double d : unigram) uni.add(d);
        j.put("word_score", uni);
        List<Object> bi = new ArrayList<>();
        for (double[] row : bigram) {
            List<Object> l = new ArrayList<>();
            for (double d : row) l.add(d);
            bi.add(l);
        }
        j.put("context_score", bi);
        HfCheckpoint.writeAtomically(file, Json.write(j) + "\n");
    }

    /** Reads task.json (a task folder or the file). */
    public static BuiltinTask load(Path path) throws IOException {
        Path f = Files.isDirectory(path) ? path.resolve("task.json") : path;
        if (!Files.isRegularFile(f)) throw new IOException(f + ": no task.json (not a built-in task folder)");
        Map<String, Object> j = Json.parseObject(Files.readString(f));
        if (!"aligndistil-builtin-task".equals(j.get("kind"))) throw new IOException(f + ": not a built-in task file");
        return create(((Number) j.get("seed")).longValue(), ((Number) j.get("num_words")).intValue());
    }
}
