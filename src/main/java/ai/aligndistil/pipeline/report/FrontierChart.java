package ai.aligndistil.pipeline.report;

import java.awt.BasicStroke;
import java.awt.Color;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;

import org.knowm.xchart.BitmapEncoder;
import org.knowm.xchart.XYChart;
import org.knowm.xchart.XYChartBuilder;
import org.knowm.xchart.XYSeries;
import org.knowm.xchart.style.markers.SeriesMarkers;

/**
 * The demo's reward-KL frontier chart (XChart, PNG): per method, its points (every knob value and every measured
 * step, mean over seeds) as markers with standard-error bars on the reward, and its upper frontier as a line.
 */
public final class FrontierChart {
    private static final Color[] PALETTE = {new Color(0x1f77b4), new Color(0xd62728), new Color(0x2ca02c), new Color(0xff7f0e),
            new Color(0x9467bd), new Color(0x8c564b), new Color(0xe377c2), new Color(0x7f7f7f), new Color(0x17becf)};

    /** A point: mean KL, mean reward and its standard error (NaN or 0: no bar). */
    public record Point(double kl, double reward, double rewardSe) {}

    private record Method(String name, List<Point> points) {}

    private final String title;
    private final List<Method> methods = new ArrayList<>();

    public FrontierChart(String title) { this.title = title; }

    public FrontierChart add(String method, List<Point> points) {
        methods.add(new Method(method, List.copyOf(points)));
        return this;
    }

    /** Writes the chart as PNG (headless). */
    public void write(Path png, int width, int height) throws IOException {
        System.setProperty("java.awt.headless", "true");
        XYChart c = new XYChartBuilder().width(width).height(height).title(title)
                .xAxisTitle("KL(policy || initial policy), sequence level (nats)").yAxisTitle("true reward (mean over seeds; bars: ± 1 SE)").build();
        c.getStyler().setChartBackgroundColor(Color.WHITE);
        c.getStyler().setLegendPosition(org.knowm.xchart.style.Styler.LegendPosition.OutsideE);
        c.getStyler().setMarkerSize(6);
        c.getStyler().setErrorBarsColorSeriesColor(true);
        c.getStyler().setYAxisDecimalPattern("#0.000");
        c.getStyler().setXAxisDecimalPattern("#0.000");
        int i = 0;
        for (Method m : methods) {
            Color col = PALETTE[i++ % PALETTE.length];
            List<Point> pts = new ArrayList<>(m.points());
            pts.removeIf(p -> !Double.isFinite(p.kl()) || !Double.isFinite(p.reward()));
            if (pts.isEmpty()) continue;
            pts.sort(Comparator.comparingDouble(Point::kl));
            double[] x = new double[pts.size()], y = new double[pts.size()], e = new double[pts.size()];
            for (int k = 0; k < pts.size(); k++) {
                x[k] = pts.get(k).kl();
                y[k] = pts.get(k).reward();
                e[k] = Double.isFinite(pts.get(k).rewardSe()) ? pts.get(k).rewardSe() : 0;
            }
            XYSeries s = c.addSeries(m.name() + " (points)", x, y, e);
            s.setXYSeriesRenderStyle(XYSeries.XYSeriesRenderStyle.Scatter);
            s.setMarker(SeriesMarkers.CIRCLE);
            s.setMarkerColor(col);
            s.setLineColor(col);
            s.setShowInLegend(false);
            List<Claims.Point> front = Claims.front(pts.stream().map(p -> new Claims.Point(p.kl(), p.reward())).toList());
            double[] fx = front.stream().mapToDouble(Claims.Point::kl).toArray(), fy = front.stream().mapToDouble(Claims.Point::reward).toArray();
            XYSeries f = c.addSeries(m.name(), fx, fy);
            f.setXYSeriesRenderStyle(XYSeries.XYSeriesRenderStyle.Line);
            f.setMarker(SeriesMarkers.NONE);
            f.setLineColor(col);
            f.setLineStyle(new BasicStroke(2f));
        }
        Files.createDirectories(png.toAbsolutePath().getParent());
        String base = png.toString().endsWith(".png") ? png.toString().substring(0, png.toString().length() - 4) : png.toString();
        BitmapEncoder.saveBitmap(c, base, BitmapEncoder.BitmapFormat.PNG);
    }
}
