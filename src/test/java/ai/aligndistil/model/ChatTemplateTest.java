package ai.aligndistil.model;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import ai.aligndistil.model.ChatTemplate.Message;

class ChatTemplateTest {
    @TempDir Path tmp;

    static final List<Message> CONV = List.of(Message.user("What is the capital of France?"), Message.assistant("Paris."));

    @Test
    void rendersQwen25ChatML() {
        ChatTemplate t = ChatTemplate.qwen25();
        assertEquals("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
                + "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n", t.promptText(CONV));
        assertEquals("Paris.<|im_end|>", t.responseText(CONV));
        List<Message> withSystem = List.of(Message.system("Be brief."), Message.user("hello"));
        assertEquals("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhello<|im_end|>\n", t.render(withSystem, false));
        assertEquals("<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n",
                new ChatTemplate(null, ChatTemplate.IM_END).render(List.of(Message.user("hello")), true));
    }

    @Test
    void tokenisesPromptAndResponseSeparately() throws IOException {
        try (HfTokenizer tok = HfTokenizer.load(TinyModels.writeTokenizer(tmp))) {
            assertEquals(2, tok.requireTokenId("<|im_end|>"));
            assertEquals(1, tok.requireTokenId("<|im_start|>"));
            assertArrayEquals(new long[] {24, 25}, tok.encode("hello world"), "no special tokens added");
            assertArrayEquals(new long[] {1, 5, 24, 2}, tok.encode("<|im_start|>user\nhello<|im_end|>"), "special tokens in text are recognised");
            assertTrue(tok.decode(new long[] {24, 25}, true).contains("hello"));

            ChatTemplate t = ChatTemplate.qwen25();
            ChatTemplate.Example ex = t.tokenize(tok, CONV, 2048);
            long[] p = tok.encode(t.promptText(CONV));
            long[] r = tok.encode(t.responseText(CONV));
            assertEquals(p.length, ex.promptLength());
            long[] both = Arrays.copyOf(p, p.length + r.length);
            System.arraycopy(r, 0, both, p.length, r.length);
            assertArrayEquals(both, ex.ids());
            assertEquals(2, ex.ids()[ex.ids().length - 1], "ends with <|im_end|>");
            assertArrayEquals(new long[] {23, 2}, Arrays.copyOfRange(ex.ids(), p.length, ex.ids().length));
            // the prompt ends with the generation prompt: <|im_start|> assistant
            assertArrayEquals(new long[] {1, 6}, Arrays.copyOfRange(ex.ids(), p.length - 2, p.length));

            // An answer without EOS gets " <|im_end|>"; truncation forces the last token to EOS.
            List<Message> longer = List.of(Message.user("hello"), Message.assistant("hello world hello world hello world"));
            ChatTemplate.Example cut = t.tokenize(tok, longer, p.length - 2 + 0 + 20);
            assertTrue(cut.ids().length <= p.length + 18);
            assertEquals(2, cut.ids()[cut.ids().length - 1]);
            int promptLen = tok.encode(t.promptText(longer)).length;
            ChatTemplate.Example truncated = t.tokenize(tok, longer, promptLen + 3);
            assertEquals(promptLen + 3, truncated.ids().length);
            assertArrayEquals(new long[] {24, 25, 2}, Arrays.copyOfRange(truncated.ids(), promptLen, promptLen + 3));
            // Prompts of at least maxLen - 2 tokens are dropped.
            assertNull(t.tokenize(tok, CONV, p.length + 2));
        }
    }
}
