package ai.aligndistil.pipeline.report;

import java.awt.BasicStroke;
import java.awt.Color;
import java.awt.Font;
import java.awt.Graphics2D;
import java.awt.RenderingHints;
import java.awt.image.BufferedImage;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import javax.imageio.ImageIO;

/**
 * A small line chart drawn with java.awt (headless) and written as PNG: several named series of (x, y)
 * points, each a line with point markers, axes with round ticks, a legend in the top-left corner.
 */
public final class LineChart {
    private static final Color[] PALETTE = {new Color(0x1f77b4), new Color(0xd62728), new Color(0x2ca02c), new Color(0xff7f0e),
            new Color(0x9467bd), new Color(0x8c564b), new Color(0xe377c2), new Color(0x7f7f7f), new Color(0x17becf)};

    private record Series(String name, double[] x, double[] y) {}

    private final String title, xLabel, yLabel;
    private final List<Series> series = new ArrayList<>();

    public LineChart(String title, String xLabel, String yLabel) {
        this.title = title;
        this.xLabel = xLabel;
        this.yLabel = yLabel;
    }

    public LineChart add(String name, double[] x, double[] y) {
        if (x.length != y.length) throw new IllegalArgumentException("x and y differ in length");
        series.add(new Series(name, x.clone(), y.clone()));
        return this;
    }

    public void write(Path file, int width, int height) throws IOException {
        System.setProperty("java.awt.headless", "true");
        BufferedImage img = new BufferedImage(width, height, BufferedImage.TYPE_INT_RGB);
        Graphics2D g = img.createGraphics();
        try {
            g.setRenderingHint(RenderingHints.KEY_ANTIALIASING, RenderingHints.VALUE_ANTIALIAS_ON);
            g.setRenderingHint(RenderingHints.KEY_TEXT_ANTIALIASING, RenderingHints.VALUE_TEXT_ANTIALIAS_ON);
            g.setColor(Color.WHITE);
            g.fillRect(0, 0, width, height);
            double x0 = Double.POSITIVE_INFINITY, x1 = Double.NEGATIVE_INFINITY, y0 = Double.POSITIVE_INFINITY, y1 = Double.NEGATIVE_INFINITY;
            for (Series s : series) for (int i = 0; i < s.x.length; i++) {
                if (!Double.isFinite(s.x[i]) || !Double.isFinite(s.y[i])) continue;
                x0 = Math.min(x0, s.x[i]); x1 = Math.max(x1, s.x[i]);
                y0 = Math.min(y0, s.y[i]); y1 = Math.max(y1, s.y[i]);
            }
            if (!(x1 >= x0)) { x0 = 0; x1 = 1; y0 = 0; y1 = 1; }
            if (x1 == x0) x1 = x0 + 1;
            if (y1 == y0) { y0 -= 0.5; y1 += 0.5; }
            double[] xt = ticks(x0, x1), yt = ticks(y0, y1);
            x0 = Math.min(x0, xt[0]); x1 = Math.max(x1, xt[xt.length - 1]);
            y0 = Math.min(y0, yt[0]); y1 = Math.max(y1, yt[yt.length - 1]);
            int left = 70, right = 20, top = 40, bottom = 55;
            int pw = width - left - right, ph = height - top - bottom;
            Font small = new Font(Font.SANS_SERIF, Font.PLAIN, 12), big = new Font(Font.SANS_SERIF, Font.BOLD, 15);
            g.setFont(big);
            g.setColor(Color.BLACK);
            g.drawString(title, left, 24);
            g.setFont(small);
            for (double t : xt) {
                int px = left + (int) Math.round((t - x0) / (x1 - x0) * pw);
                g.setColor(new Color(0xe6e6e6));
                g.drawLine(px, top, px, top + ph);
                g.setColor(Color.DARK_GRAY);
                String s = label(t);
                g.drawString(s, px - g.getFontMetrics().stringWidth(s) / 2, top + ph + 16);
            }
            for (double t : yt) {
                int py = top + ph - (int) Math.round((t - y0) / (y1 - y0) * ph);
                g.setColor(new Color(0xe6e6e6));
                g.drawLine(left, py, left + pw, py);
                g.setColor(Color.DARK_GRAY);
                String s = label(t);
                g.drawString(s, left - 6 - g.getFontMetrics().stringWidth(s), py + 4);
            }
            g.setColor(Color.BLACK);
            g.drawRect(left, top, pw, ph);
            g.drawString(xLabel, left + pw / 2 - g.getFontMetrics().stringWidth(xLabel) / 2, height - 12);
            Graphics2D gr = (Graphics2D) g.create();
            gr.rotate(-Math.PI / 2);
            gr.drawString(yLabel, -(top + ph / 2 + gr.getFontMetrics().stringWidth(yLabel) / 2), 16);
            gr.dispose();
            for (int k = 0; k < series.size(); k++) {
                Series s = series.get(k);
                g.setColor(PALETTE[k % PALETTE.length]);
                g.setStroke(new BasicStroke(2f));
                int px = -1, py = -1;
                for (int i = 0; i < s.x.length; i++) {
                    if (!Double.isFinite(s.x[i]) || !Double.isFinite(s.y[i])) { px = -1; continue; }
                    int cx = left + (int) Math.round((s.x[i] - x0) / (x1 - x0) * pw);
                    int cy = top + ph - (int) Math.round((s.y[i] - y0) / (y1 - y0) * ph);
                    if (px >= 0) g.drawLine(px, py, cx, cy);
                    g.fillOval(cx - 3, cy - 3, 7, 7);
                    px = cx;
                    py = cy;
                }
                int ly = top + 16 + 16 * k;
                g.fillRect(left + 10, ly - 8, 14, 4);
                g.setColor(Color.BLACK);
                g.drawString(s.name, left + 30, ly - 2);
            }
        } finally {
            g.dispose();
        }
        Files.createDirectories(file.toAbsolutePath().getParent());
        ImageIO.write(img, "png", file.toFile());
    }

    /** About five round ticks covering [lo, hi]. */
    static double[] ticks(double lo, double hi) {
        double raw = (hi - lo) / 5, mag = Math.pow(10, Math.floor(Math.log10(raw))), step;
        double f = raw / mag;
        step = (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
        double start = Math.floor(lo / step) * step;
        List<Double> t = new ArrayList<>();
        for (double v = start; v <= hi + step * 0.999; v += step) t.add(v);
        return t.stream().mapToDouble(Double::doubleValue).toArray();
    }

    static String label(double v) {
        if (Math.abs(v) < 1e-9) return "0";
        if (Math.abs(v - Math.rint(v)) < 1e-9 && Math.abs(v) < 1e6) return Long.toString(Math.round(v));
        return String.format("%.3g", v);
    }
}
