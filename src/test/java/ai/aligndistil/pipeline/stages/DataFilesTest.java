package ai.aligndistil.pipeline.stages;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import ai.aligndistil.pipeline.data.DataFiles;

class DataFilesTest {
    @TempDir Path tmp;

    static final String UF = "{\"prompt\":\"hi\",\"chosen\":[{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"assistant\",\"content\":\"good\"}],"
            + "\"rejected\":[{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"assistant\",\"content\":\"bad\"}]}";
    static final String FLAT = "{\"prompt\":\"q\",\"chosen\":\"yes\",\"rejected\":\"no\"}";

    @Test
    void readsBothLayouts() throws Exception {
        Path f = tmp.resolve("p.jsonl");
        Files.write(f, List.of(UF, "", FLAT));
        DataFiles.Loaded<DataFiles.Pair> l = DataFiles.pairs(f, false);
        assertEquals(2, l.records().size());
        assertEquals("good", l.records().get(0).chosen());
        assertEquals("hi", l.records().get(0).prompt().get(0).content());
        assertEquals("no", l.records().get(1).rejected());
        assertEquals(3, l.records().get(1).line());
        assertEquals("bad", l.records().get(0).swapped().chosen());
    }

    @Test
    void malformedLinesAreReportedWithTheirLineNumbers() throws Exception {
        Path f = tmp.resolve("bad.jsonl");
        Files.write(f, List.of(UF, "{\"prompt\": \"x\", \"chosen\": \"a\"", FLAT, "{\"prompt\":\"x\",\"chosen\":\"a\"}",
                "{\"prompt\":\"x\",\"chosen\":[{\"role\":\"user\",\"content\":\"x\"}],\"rejected\":[{\"role\":\"user\",\"content\":\"x\"}]}"));
        DataFiles.DataException e = assertThrows(DataFiles.DataException.class, () -> DataFiles.pairs(f, false));
        assertEquals(2, e.line);
        assertTrue(e.getMessage().startsWith(f + ":2: not a JSON object"), e.getMessage());
        DataFiles.Loaded<DataFiles.Pair> l = DataFiles.pairs(f, true);
        assertEquals(2, l.records().size());
        assertEquals(3, l.skipped());
        assertTrue(l.problems().get(1).contains(":4: missing key 'rejected'"), l.problems().get(1));
        assertTrue(l.problems().get(2).contains(":5: 'chosen' must end with an assistant message"), l.problems().get(2));
    }

    @Test
    void trainingStopsBeforeItStartsOnAMalformedLine() throws Exception {
        Path task = Fixture.task(tmp.resolve("task"));
        Path bad = tmp.resolve("bad.jsonl");
        List<String> lines = new java.util.ArrayList<>(Files.readAllLines(task.resolve("train_prefs.jsonl")));
        lines.set(4, "{oops");
        Files.write(bad, lines);
        String[] args = Fixture.common(task, "--model", task.resolve("base").toString(), "--out", tmp.resolve("o").toString(), "--data", bad.toString());
        ByteArrayOut err = new ByteArrayOut();
        int rc = ai.aligndistil.cli.Main.run(concat(new String[] {"dpo"}, args), Fixture.NULL, err.stream());
        assertEquals(1, rc);
        assertTrue(err.text().contains(bad + ":5: not a JSON object"), err.text());
        assertTrue(!Files.exists(tmp.resolve("o/metrics.jsonl")));
        // with the flag, the line is skipped and counted
        err = new ByteArrayOut();
        rc = ai.aligndistil.cli.Main.run(concat(new String[] {"dpo", "--skip-bad-lines"}, args), Fixture.NULL, err.stream());
        assertEquals(0, rc, err.text());
        assertTrue(err.text().contains("1 malformed lines skipped"), err.text());
    }

    static String[] concat(String[] a, String[] b) {
        String[] r = new String[a.length + b.length];
        System.arraycopy(a, 0, r, 0, a.length);
        System.arraycopy(b, 0, r, a.length, b.length);
        return r;
    }

    static final class ByteArrayOut {
        final java.io.ByteArrayOutputStream b = new java.io.ByteArrayOutputStream();
        java.io.PrintStream stream() { return new java.io.PrintStream(b, true); }
        String text() { return b.toString(); }
    }
}
