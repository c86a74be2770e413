package ai.aligndistil.pipeline.report;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.awt.image.BufferedImage;
import java.io.IOException;
import java.nio.file.Path;

import javax.imageio.ImageIO;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.knowm.xchart.XYChart;

/** The XChart helper: titles, legend entries, error bars, non-finite points left out, a PNG of the asked size. */
class ChartsTest {
    @TempDir Path tmp;

    @Test
    void writesAPngWithTitlesSeriesAndErrorBars() throws IOException {
        double[] x = {0, 1, 2, 3}, y = {0.1, 0.4, Double.NaN, 0.9}, e = {0.05, 0.05, 0.05, 0.1};
        Charts c = Charts.lines("reward", "optimiser step", "true reward (task score units)")
                .add("dpo", x, y)
                .add("aligndistil", x, new double[] {0.2, 0.5, 0.7, 1.0}, e)
                .add("empty", new double[] {Double.NaN}, new double[] {1});
        XYChart chart = c.chart(640, 400);
        assertEquals("optimiser step", chart.getXAxisTitle());
        assertEquals("true reward (task score units)", chart.getYAxisTitle());
        assertEquals(2, chart.getSeriesMap().size(), "a series with no finite point is not drawn");
        assertEquals(3, chart.getSeriesMap().get("dpo").getXData().length, "the NaN point is left out");
        assertTrue(chart.getSeriesMap().get("aligndistil").getExtraValues() != null, "error bars kept");
        Path png = tmp.resolve("charts").resolve("r.png");
        c.write(png, 640, 400);
        BufferedImage img = ImageIO.read(png.toFile());
        assertEquals(640, img.getWidth());
        assertEquals(400, img.getHeight());
        assertThrows(IllegalArgumentException.class, () -> Charts.lines("t", "x", "y").add("bad", x, new double[] {1}));
    }
}
