package ai.aligndistil.pipeline.report;

import java.awt.Color;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import org.knowm.xchart.BitmapEncoder;
import org.knowm.xchart.XYChart;
import org.knowm.xchart.XYChartBuilder;
import org.knowm.xchart.XYSeries;
import org.knowm.xchart.style.Styler;
import org.knowm.xchart.style.markers.SeriesMarkers;

/**
 * The reports' charts, drawn with XChart and written as PNG: line charts of named (x, y) series with axis titles
 * that carry their units, a legend, and error bars where the data has them. Non-finite points are left out (a
 * series with none left is not drawn). Headless.
 *
 * <pre>
 * Charts.lines("True reward during training", "optimiser step", "true reward (task units)")
 *       .add("dpo", steps, reward)
 *       .add("aligndistil-off", steps, reward, standardError)
 *       .write(dir.resolve("reward.png"), 900, 520);
 * </pre>
 */
public final class Charts {
    private static final Color[] PALETTE = {new Color(0x1f77b4), new Color(0xd62728), new Color(0x2ca02c), new Color(0xff7f0e),
            new Color(0x9467bd), new Color(0x8c564b), new Color(0xe377c2), new Color(0x7f7f7f), new Color(0x17becf)};

    private record Series(String name, double[] x, double[] y, double[] err) {}

    private final String title, xTitle, yTitle;
    private final List<Series> series = new ArrayList<>();

    private Charts(String title, String xTitle, String yTitle) {
        this.title = title;
        this.xTitle = xTitle;
        this.yTitle = yTitle;
    }

    /** A line chart; the axis titles should name the unit, e.g. {@code "KL(policy || initial) (nats)"}. */
    public static Charts lines(String title, String xTitle, String yTitle) { return new Charts(title, xTitle, yTitle); }

    /** A series without error bars. */
    public Charts add(String name, double[] x, double[] y) { return add(name, x, y, null); }

    /** A series with symmetric error bars of half-length {@code err[i]} (null: none). */
    public Charts add(String name, double[] x, double[] y, double[] err) {
        if (x.length != y.length || (err != null && err.length != y.length))
            throw new IllegalArgumentException(name + ": x, y and error bars differ in length (" + x.length + ", " + y.length
                    + (err == null ? "" : ", " + err.length) + ")");
        series.add(new Series(name, x.clone(), y.clone(), err == null ? null : err.clone()));
        return this;
    }

    /** The XChart chart (for callers that style it further). */
    public XYChart chart(int width, int height) {
        XYChart c = new XYChartBuilder().width(width).height(height).title(title).xAxisTitle(xTitle).yAxisTitle(yTitle).build();
        Styler s = c.getStyler();
        s.setLegendPosition(Styler.LegendPosition.OutsideE);
        s.setChartBackgroundColor(Color.WHITE);
        c.getStyler().setErrorBarsColorSeriesColor(true);
        c.getStyler().setSeriesColors(PALETTE);
        c.getStyler().setDefaultSeriesRenderStyle(XYSeries.XYSeriesRenderStyle.Line);
        boolean any = false;
        for (Series sr : series) {
            int n = 0;
            for (int i = 0; i < sr.x.length; i++) if (finite(sr, i)) n++;
            if (n == 0) continue;
            double[] x = new double[n], y = new double[n], e = sr.err == null ? null : new double[n];
            for (int i = 0, j = 0; i < sr.x.length; i++) {
                if (!finite(sr, i)) continue;
                x[j] = sr.x[i];
                y[j] = sr.y[i];
                if (e != null) e[j] = sr.err[i];
                j++;
            }
            XYSeries added = e == null ? c.addSeries(sr.name, x, y) : c.addSeries(sr.name, x, y, e);
            added.setMarker(SeriesMarkers.CIRCLE);
            any = true;
        }
        if (!any) c.addSeries("(no data)", new double[] {0}, new double[] {0}).setMarker(SeriesMarkers.NONE);
        return c;
    }

    /** Writes the chart as PNG ({@code file} should end in .png), creating the folder. */
    public void write(Path file, int width, int height) throws IOException {
        System.setProperty("java.awt.headless", "true");
        if (file.getParent() != null) Files.createDirectories(file.getParent());
        String name = file.toString();
        if (!name.endsWith(".png")) throw new IllegalArgumentException("not a .png file: " + file);
        BitmapEncoder.saveBitmap(chart(width, height), name.substring(0, name.length() - 4), BitmapEncoder.BitmapFormat.PNG);
    }

    private static boolean finite(Series s, int i) {
        return Double.isFinite(s.x[i]) && Double.isFinite(s.y[i]) && (s.err == null || Double.isFinite(s.err[i]));
    }
}
