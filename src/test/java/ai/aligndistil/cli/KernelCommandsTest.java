package ai.aligndistil.cli;

import org.junit.jupiter.api.Test;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * {@code ./aligndistil replay}, {@code self-check} and its old name {@code demo --replay} reach the kernel jar's
 * commands (ai.aligndistil.kernel.tool; their behaviour is tested there, in ReplayCommandTest and KernelJarTest).
 */
class KernelCommandsTest {
    record Run(int code, String out, String err) {}

    static Run main(String... args) {
        ByteArrayOutputStream o = new ByteArrayOutputStream(), e = new ByteArrayOutputStream();
        int code = Main.run(args, new PrintStream(o, true, StandardCharsets.UTF_8), new PrintStream(e, true, StandardCharsets.UTF_8));
        return new Run(code, o.toString(StandardCharsets.UTF_8), e.toString(StandardCharsets.UTF_8));
    }

    @Test
    void replayIsDispatched() {
        Run r = main("replay", "--frobnicate");
        assertEquals(2, r.code(), r.err());
        assertTrue(r.err().startsWith("aligndistil replay: Unknown option: '--frobnicate'"), r.err());
        r = main("replay", "--help");
        assertEquals(0, r.code(), r.err());
        assertTrue(r.out().contains("--sequence-divisor"), r.out());
    }

    @Test
    void selfCheckUnderBothNames() {
        for (String[] args : new String[][] {{"self-check"}, {"demo", "--replay"}}) {
            Run r = main(args);
            assertEquals(0, r.code(), r.err());
            assertTrue(r.out().contains("self-check: ok"), r.out());
        }
        Run r = main("demo", "--replay", "--bogus");
        assertEquals(2, r.code(), r.err());
    }
}
