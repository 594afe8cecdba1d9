// plot.cpp: the line chart of io/plot.h, rasterised by hand (loss curves of a training run).
//
// Geometry (documented in docs/run-outputs.md; the tests compute pixel positions from it):
//   - pixel (row i, column j) has its centre at the real coordinates (j, i);
//   - the plot area spans columns kLeft .. width-1-kRight and rows top .. height-1-kBottom, where
//     top = kTopPad + (title ? kTitleBand : 0) + kLegendRow * legend_rows;
//     a frame is drawn on those four lines;
//   - the data ranges are the finite points of all (smoothed) series, widened by kPadX / kPadY of
//     the span on each side; a zero span (one point, a constant series) becomes v +- max(|v|/10, 1)
//     for y and v +- max(|v|/20, 1) for x (nothing widened further); no finite point: [0, 1];
//   - a data point (x, y) maps to the real pixel coordinates
//       col = x_left + (x - x0) / (x1 - x0) * (x_right - x_left)
//       row = y_bottom - (y - y0) / (y1 - y0) * (y_bottom - y_top).
// Ticks are "nice" numbers (1, 2 or 5 times a power of ten) inside the range, about one per
// 100 px on x and one per 50 px on y, with light grid lines and labels in the built-in 5x7 font.
//
// Lines: each segment is drawn with a coverage of clamp(w + 0.5 - d, 0, 1), d the distance from
// the pixel centre to the segment and w = 1 (a 2-px line with a 1-px soft edge): pixels within
// half a pixel of the true line get the series colour exactly. Coverage is the maximum over the
// segments of one series (not a sum), so joints do not darken. Non-finite x or y ends the
// polyline (a gap); a finite point with no finite neighbour is drawn as a small disc.
//
// Smoothing with window k = options.smooth: point i becomes the mean of the finite values among
// points i - k/2 .. i + (k-1)/2 (integer division; clipped at the ends), a centred moving average;
// non-finite points stay gaps. GAN losses are noisy enough that raw curves hide the trend.
//
// Colours: series k gets palette entry k of the ten "tab10" colours (31,119,180), (255,127,14),
// (44,160,44), (214,39,40), ...; text is (20,20,20), the background white. The legend runs in
// rows of kLegendRow px under the title, starting at column kLeft: an 18x3 px sample of the
// colour, 5 px, the name.
#include "io/plot.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "io/bitmap_font.h"
#include "io/image.h"
#include "tensor/error.h"

namespace engine::io {

namespace {

constexpr int kLeft = 72, kRight = 16, kBottom = 40;
constexpr int kTopPad = 10, kTitleBand = 22, kLegendRow = 12;
constexpr double kPadX = 0.02, kPadY = 0.05;
constexpr double kHalfWidth = 1.0;   // line half-width in pixels
constexpr double kDotRadius = 1.5;   // isolated points
constexpr int kLegendSample = 18, kLegendGap = 5, kLegendSpacing = 14;

const Rgb kBackground{255, 255, 255};
const Rgb kText{20, 20, 20};
const Rgb kFrame{60, 60, 60};
const Rgb kGrid{225, 225, 225};

// A qualitative palette (the ten "tab10" colours); beyond ten series, hues spaced by the golden
// angle keep successive colours apart.
Rgb series_colour(size_t i) {
  static const Rgb palette[10] = {{31, 119, 180}, {255, 127, 14}, {44, 160, 44},   {214, 39, 40},  {148, 103, 189},
                                  {140, 86, 75},  {227, 119, 194}, {127, 127, 127}, {188, 189, 34}, {23, 190, 207}};
  if (i < 10) return palette[i];
  const double h = std::fmod(double(i) * 0.618033988749895, 1.0) * 6.0;
  const double s = 0.75, v = 0.8;
  const int sector = int(h);
  const double f = h - sector, p = v * (1 - s), q = v * (1 - s * f), t = v * (1 - s * (1 - f));
  double r = v, g = t, b = p;
  switch (sector % 6) {
    case 0: r = v, g = t, b = p; break;
    case 1: r = q, g = v, b = p; break;
    case 2: r = p, g = v, b = t; break;
    case 3: r = p, g = q, b = v; break;
    case 4: r = t, g = p, b = v; break;
    default: r = v, g = p, b = q; break;
  }
  return {uint8_t(std::lround(r * 255)), uint8_t(std::lround(g * 255)), uint8_t(std::lround(b * 255))};
}

struct Canvas {
  int64_t w, h;
  uint8_t* p;
  void set(int64_t x, int64_t y, Rgb c) {
    if (x < 0 || y < 0 || x >= w || y >= h) return;
    uint8_t* q = p + (y * w + x) * 3;
    q[0] = c.r, q[1] = c.g, q[2] = c.b;
  }
  void blend(int64_t x, int64_t y, Rgb c, double a) {
    if (x < 0 || y < 0 || x >= w || y >= h || a <= 0) return;
    uint8_t* q = p + (y * w + x) * 3;
    if (a >= 1) {
      q[0] = c.r, q[1] = c.g, q[2] = c.b;
      return;
    }
    q[0] = uint8_t(std::lround(q[0] * (1 - a) + c.r * a));
    q[1] = uint8_t(std::lround(q[1] * (1 - a) + c.g * a));
    q[2] = uint8_t(std::lround(q[2] * (1 - a) + c.b * a));
  }
  void hline(int64_t x0, int64_t x1, int64_t y, Rgb c) {
    for (int64_t x = x0; x <= x1; ++x) set(x, y, c);
  }
  void vline(int64_t x, int64_t y0, int64_t y1, Rgb c) {
    for (int64_t y = y0; y <= y1; ++y) set(x, y, c);
  }
  void text(int64_t x, int64_t y, std::string_view s, Rgb c, int scale = 1) { draw_text(p, w, h, x, y, s, c, scale); }
};

std::vector<double> smooth_values(const std::vector<double>& y, int window) {
  if (window <= 1) return y;
  const int64_t n = int64_t(y.size()), before = window / 2, after = (window - 1) / 2;
  // Prefix sums of the finite values and of their count: each window is O(1).
  std::vector<double> sum(size_t(n) + 1, 0.0);
  std::vector<int64_t> count(size_t(n) + 1, 0);
  for (int64_t i = 0; i < n; ++i) {
    const bool ok = std::isfinite(y[size_t(i)]);
    sum[size_t(i) + 1] = sum[size_t(i)] + (ok ? y[size_t(i)] : 0.0);
    count[size_t(i) + 1] = count[size_t(i)] + (ok ? 1 : 0);
  }
  std::vector<double> out(y.size());
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(y[size_t(i)])) {
      out[size_t(i)] = y[size_t(i)];
      continue;
    }
    const int64_t lo = std::max<int64_t>(0, i - before), hi = std::min<int64_t>(n, i + after + 1);
    out[size_t(i)] = (sum[size_t(hi)] - sum[size_t(lo)]) / double(count[size_t(hi)] - count[size_t(lo)]);
  }
  return out;
}

// 1, 2 or 5 times a power of ten, close to span / target (target = the wanted number of ticks).
double nice_step(double span, int target) {
  const double raw = span / std::max(target, 1);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double norm = raw / mag;
  // The nearest of 1, 2, 5, 10 on a log scale (thresholds at their geometric means).
  const double nice = norm < 1.4142 ? 1.0 : norm < 3.1623 ? 2.0 : norm < 7.0711 ? 5.0 : 10.0;
  return nice * mag;
}

// Fixed-point with just enough decimals for the step; scientific with just enough significant
// digits to tell neighbouring ticks apart when the numbers are very large or very small.
std::string format_tick(double v, double step, double max_abs) {
  if (std::fabs(v) < step * 1e-9) v = 0.0;  // no "-0"
  const int decimals = step >= 1.0 ? 0 : int(std::ceil(-std::log10(step) - 1e-9));
  if (max_abs < 1e7 && decimals <= 4) return fmt::format("{:.{}f}", v, decimals);
  if (v == 0.0) return "0";
  const int sig = std::clamp(int(std::floor(std::log10(max_abs)) - std::floor(std::log10(step))) + 1, 1, 10);
  return fmt::format("{:.{}g}", v, sig);
}

std::vector<double> ticks_in(double lo, double hi, double step) {
  std::vector<double> out;
  const double first = std::ceil(lo / step - 1e-9), last = std::floor(hi / step + 1e-9);
  for (double k = first; k <= last && out.size() < 200; k += 1.0) out.push_back(k * step);
  return out;
}

struct Range {
  double lo = 0, hi = 1;
};

Range padded_range(double lo, double hi, double pad, double zero_span_fraction) {
  if (!(lo <= hi)) return {0.0, 1.0};
  if (hi == lo) {
    const double half = std::max(std::fabs(lo) * zero_span_fraction, 1.0);
    return {lo - half, lo + half};
  }
  const double m = (hi - lo) * pad;
  return {lo - m, hi + m};
}

// Distance from (px, py) to the segment a-b.
double segment_distance(double px, double py, double ax, double ay, double bx, double by) {
  const double dx = bx - ax, dy = by - ay, len2 = dx * dx + dy * dy;
  double t = len2 > 0 ? ((px - ax) * dx + (py - ay) * dy) / len2 : 0.0;
  t = std::clamp(t, 0.0, 1.0);
  const double ex = ax + t * dx - px, ey = ay + t * dy - py;
  return std::sqrt(ex * ex + ey * ey);
}

struct Legend {
  struct Entry {
    int64_t x, row;
  };
  std::vector<Entry> entries;
  int rows = 0;
};

Legend layout_legend(const std::vector<PlotSeries>& series, int64_t width) {
  Legend legend;
  if (series.empty()) return legend;
  int64_t x = kLeft, row = 0;
  for (const PlotSeries& s : series) {
    const int64_t w = kLegendSample + kLegendGap + text_width(s.name);
    if (x > kLeft && x + w > width - kRight) x = kLeft, ++row;
    legend.entries.push_back({x, row});
    x += w + kLegendSpacing;
  }
  legend.rows = int(row) + 1;
  return legend;
}

}  // namespace

Tensor render_line_plot(const std::vector<PlotSeries>& series, const PlotOptions& options) {
  const int64_t W = options.width, H = options.height;
  ENGINE_CHECK(W >= 200 && H >= 150 && W <= 16384 && H <= 16384,
               "render_line_plot: size {}x{} out of range (200..16384 x 150..16384)", W, H);
  ENGINE_CHECK(options.smooth >= 1, "render_line_plot: smooth must be >= 1, got {}", options.smooth);
  for (const PlotSeries& s : series)
    ENGINE_CHECK(s.x.size() == s.y.size(), "render_line_plot: series '{}' has {} x values but {} y values", s.name,
                 s.x.size(), s.y.size());

  std::vector<std::vector<double>> ys;
  ys.reserve(series.size());
  for (const PlotSeries& s : series) ys.push_back(smooth_values(s.y, options.smooth));

  // Data ranges over the finite points.
  double xmin = std::numeric_limits<double>::infinity(), xmax = -xmin, ymin = xmin, ymax = -xmin;
  size_t finite_points = 0;
  for (size_t k = 0; k < series.size(); ++k)
    for (size_t i = 0; i < series[k].x.size(); ++i) {
      const double x = series[k].x[i], y = ys[k][i];
      if (!std::isfinite(x) || !std::isfinite(y)) continue;
      ++finite_points;
      xmin = std::min(xmin, x), xmax = std::max(xmax, x);
      ymin = std::min(ymin, y), ymax = std::max(ymax, y);
    }
  const Range xr = finite_points ? padded_range(xmin, xmax, kPadX, 0.05) : Range{};
  const Range yr = finite_points ? padded_range(ymin, ymax, kPadY, 0.1) : Range{};

  const Legend legend = layout_legend(series, W);
  const int64_t title_band = options.title.empty() ? 0 : kTitleBand;
  const int64_t x_left = kLeft, x_right = W - 1 - kRight;
  const int64_t y_top = kTopPad + title_band + int64_t(kLegendRow) * legend.rows, y_bottom = H - 1 - kBottom;
  ENGINE_CHECK(y_bottom - y_top >= 20, "render_line_plot: {} px height leaves no room for the plot under a {}-row legend",
               H, legend.rows);
  auto col_of = [&](double x) { return double(x_left) + (x - xr.lo) / (xr.hi - xr.lo) * double(x_right - x_left); };
  auto row_of = [&](double y) { return double(y_bottom) - (y - yr.lo) / (yr.hi - yr.lo) * double(y_bottom - y_top); };

  Tensor image = empty({H, W, 3}, opts(DType::u8));
  Canvas cv{W, H, image.data<uint8_t>()};
  for (int64_t i = 0; i < W * H; ++i) cv.p[i * 3] = kBackground.r, cv.p[i * 3 + 1] = kBackground.g, cv.p[i * 3 + 2] = kBackground.b;

  // Title.
  if (!options.title.empty()) {
    const int scale = text_width(options.title, 2) <= W - 16 ? 2 : 1;
    cv.text((W - text_width(options.title, scale)) / 2, kTopPad - 2, options.title, kText, scale);
  }

  // Grid, ticks and tick labels.
  const double xstep = nice_step(xr.hi - xr.lo, int((x_right - x_left) / 100));
  const double ystep = nice_step(yr.hi - yr.lo, int((y_bottom - y_top) / 50));
  const std::vector<double> xt = ticks_in(xr.lo, xr.hi, xstep), yt = ticks_in(yr.lo, yr.hi, ystep);
  double xabs = 0, yabs = 0;
  for (double v : xt) xabs = std::max(xabs, std::fabs(v));
  for (double v : yt) yabs = std::max(yabs, std::fabs(v));
  for (double v : xt) {
    const int64_t c = std::lround(col_of(v));
    cv.vline(c, y_top, y_bottom, kGrid);
    cv.vline(c, y_bottom, y_bottom + 4, kFrame);
    const std::string label = format_tick(v, xstep, xabs);
    cv.text(c - text_width(label) / 2, y_bottom + 7, label, kText);
  }
  for (double v : yt) {
    const int64_t r = std::lround(row_of(v));
    cv.hline(x_left, x_right, r, kGrid);
    cv.hline(x_left - 4, x_left, r, kFrame);
    const std::string label = format_tick(v, ystep, yabs);
    cv.text(x_left - 7 - text_width(label), r - kGlyphHeight / 2, label, kText);
  }
  cv.hline(x_left, x_right, y_top, kFrame);
  cv.hline(x_left, x_right, y_bottom, kFrame);
  cv.vline(x_left, y_top, y_bottom, kFrame);
  cv.vline(x_right, y_top, y_bottom, kFrame);
  if (!options.x_label.empty())
    cv.text((x_left + x_right) / 2 - text_width(options.x_label) / 2, y_bottom + 22, options.x_label, kText);
  if (finite_points == 0) {
    const std::string msg = series.empty() ? "no series" : "no finite data";
    cv.text((x_left + x_right) / 2 - text_width(msg) / 2, (y_top + y_bottom) / 2 - 3, msg, kText);
  }

  // Series, inside the frame. One coverage buffer per series (max over its segments).
  const int64_t pw = x_right - x_left - 1, ph = y_bottom - y_top - 1;  // interior, frame excluded
  std::vector<float> cover(size_t(pw * ph));
  auto splat = [&](double ax, double ay, double bx, double by, double half) {
    const double reach = half + 0.5;
    const int64_t c0 = std::max<int64_t>(x_left + 1, int64_t(std::floor(std::min(ax, bx) - reach)));
    const int64_t c1 = std::min<int64_t>(x_right - 1, int64_t(std::ceil(std::max(ax, bx) + reach)));
    const int64_t r0 = std::max<int64_t>(y_top + 1, int64_t(std::floor(std::min(ay, by) - reach)));
    const int64_t r1 = std::min<int64_t>(y_bottom - 1, int64_t(std::ceil(std::max(ay, by) + reach)));
    for (int64_t r = r0; r <= r1; ++r)
      for (int64_t c = c0; c <= c1; ++c) {
        const double a = std::clamp(reach - segment_distance(double(c), double(r), ax, ay, bx, by), 0.0, 1.0);
        float& dst = cover[size_t((r - y_top - 1) * pw + (c - x_left - 1))];
        dst = std::max(dst, float(a));
      }
  };
  for (size_t k = 0; k < series.size(); ++k) {
    std::fill(cover.begin(), cover.end(), 0.0f);
    const std::vector<double>& xs = series[k].x;
    const size_t n = xs.size();
    auto ok = [&](size_t i) { return i < n && std::isfinite(xs[i]) && std::isfinite(ys[k][i]); };
    for (size_t i = 0; i < n; ++i) {
      if (!ok(i)) continue;
      const double ax = col_of(xs[i]), ay = row_of(ys[k][i]);
      if (ok(i + 1)) {
        splat(ax, ay, col_of(xs[i + 1]), row_of(ys[k][i + 1]), kHalfWidth);
      } else if (i == 0 || !ok(i - 1)) {
        splat(ax, ay, ax, ay, kDotRadius);  // isolated point
      }
    }
    const Rgb colour = series_colour(k);
    for (int64_t r = 0; r < ph; ++r)
      for (int64_t c = 0; c < pw; ++c)
        if (const float a = cover[size_t(r * pw + c)]; a > 0) cv.blend(x_left + 1 + c, y_top + 1 + r, colour, a);
  }

  // Legend: a short line in the series colour, then the name.
  for (size_t k = 0; k < series.size(); ++k) {
    const int64_t x = legend.entries[k].x, y = kTopPad + title_band + legend.entries[k].row * kLegendRow;
    const Rgb colour = series_colour(k);
    for (int64_t dy = 2; dy <= 4; ++dy) cv.hline(x, x + kLegendSample - 1, y + dy, colour);
    cv.text(x + kLegendSample + kLegendGap, y, series[k].name, kText);
  }
  return image;
}

void write_line_plot(const std::string& path, const std::vector<PlotSeries>& series, const PlotOptions& options) {
  write_png(path, render_line_plot(series, options));
}

}  // namespace engine::io
