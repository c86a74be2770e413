package ai.aligndistil.model;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.OptionalLong;

import ai.aligndistil.io.Json;
import ai.djl.huggingface.tokenizers.HuggingFaceTokenizer;

/**
 * A Hugging Face {@code tokenizer.json} through DJL's bindings of the Rust tokenizers library (bundled native
 * library, works offline). {@link #encode} never adds special tokens (no BOS/EOS, no template), but special
 * tokens written in the text, such as {@code <|im_start|>}, are still recognised as single tokens, as in
 * Hugging Face. No truncation, no padding.
 */
public final class HfTokenizer implements AutoCloseable {
    private final HuggingFaceTokenizer tokenizer;
    private final Map<String, Long> addedTokens;
    private final Path file;

    private HfTokenizer(Path file, HuggingFaceTokenizer tokenizer, Map<String, Long> addedTokens) {
        this.file = file;
        this.tokenizer = tokenizer;
        this.addedTokens = addedTokens;
    }

    /**
     * Loads {@code tokenizer.json}.
     *
     * @param path the file, or a model folder containing {@code tokenizer.json}
     */
    public static HfTokenizer load(Path path) throws IOException {
        Path file = Files.isDirectory(path) ? path.resolve("tokenizer.json") : path;
        if (!Files.isRegularFile(file)) throw new IOException(file + ": no tokenizer.json");
        Map<String, Long> added = new LinkedHashMap<>();
        try {
            Map<String, Object> j = Json.parseObject(Files.readString(file));
            if (j.get("added_tokens") instanceof List<?> l) {
                for (Object o : l) {
                    if (o instanceof Map<?, ?> m && m.get("content") instanceof String c && m.get("id") instanceof Long id) added.put(c, id);
                }
            }
        } catch (Json.JsonException e) {
            throw new IOException(file + ": not valid JSON: " + e.getMessage());
        }
        try {
            HuggingFaceTokenizer t = HuggingFaceTokenizer.builder()
                    .optTokenizerPath(file)
                    .optAddSpecialTokens(false)
                    .optTruncation(false)
                    .optPadding(false)
                    .build();
            return new HfTokenizer(file, t, Collections.unmodifiableMap(added));
        } catch (RuntimeException e) {
            throw new IOException(file + ": cannot load tokenizer: " + e.getMessage(), e);
        }
    }

    /** Token ids of {@code text}, adding no special tokens. */
    public long[] encode(String text) {
        return tokenizer.encode(text, false, false).getIds();
    }

    /** Text of {@code ids}; {@code skipSpecial} drops special tokens. */
    public String decode(long[] ids, boolean skipSpecial) {
        return tokenizer.decode(ids, skipSpecial);
    }

    /** The id of an added (usually special) token such as {@code <|im_end|>}, if the tokenizer declares it. */
    public OptionalLong addedTokenId(String content) {
        Long id = addedTokens.get(content);
        return id == null ? OptionalLong.empty() : OptionalLong.of(id);
    }

    /** The id of a special token that must exist. */
    public long requireTokenId(String content) {
        return addedTokenId(content).orElseThrow(() -> new IllegalArgumentException(file + " declares no token " + content));
    }

    public Path file() { return file; }

    @Override
    public void close() { tokenizer.close(); }
}
