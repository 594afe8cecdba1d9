// Tests of io/plot (the loss-curve PNG). Pixel positions are computed here from the geometry that
// io/plot.cpp and docs/run-outputs.md document (margins, range padding, the mapping formulas), not
// from the renderer; text is checked against the glyph table of the built-in font.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <array>
#include <set>
#include <string>
#include <vector>

#include "io/bitmap_font.h"
#include "io/image.h"
#include "io/plot.h"
#include "tensor/error.h"

using namespace engine;
using namespace engine::io;
namespace fs = std::filesystem;

namespace doctest {
template <>
struct StringMaker<Rgb> {
  static String convert(const Rgb& c) {
    return ("(" + std::to_string(c.r) + "," + std::to_string(c.g) + "," + std::to_string(c.b) + ")").c_str();
  }
};
}  // namespace doctest

namespace {

// The documented geometry.
constexpr int kLeft = 72, kRight = 16, kBottom = 40, kTopPad = 10, kTitleBand = 22, kLegendRow = 12;
constexpr double kPadX = 0.02, kPadY = 0.05;
const Rgb kBlue{31, 119, 180}, kOrange{255, 127, 14}, kGreen{44, 160, 44}, kText{20, 20, 20};
const Rgb kWhite{255, 255, 255}, kFrame{60, 60, 60};
const double kNaN = std::numeric_limits<double>::quiet_NaN();

struct Geometry {
  double x_left, x_right, y_top, y_bottom, x0, x1, y0, y1;
  double col(double x) const { return x_left + (x - x0) / (x1 - x0) * (x_right - x_left); }
  double row(double y) const { return y_bottom - (y - y0) / (y1 - y0) * (y_bottom - y_top); }
};

Geometry geometry(int w, int h, bool title, int legend_rows, double xmin, double xmax, double ymin, double ymax) {
  Geometry g;
  g.x_left = kLeft, g.x_right = w - 1 - kRight;
  g.y_top = kTopPad + (title ? kTitleBand : 0) + kLegendRow * legend_rows, g.y_bottom = h - 1 - kBottom;
  g.x0 = xmin - (xmax - xmin) * kPadX, g.x1 = xmax + (xmax - xmin) * kPadX;
  g.y0 = ymin - (ymax - ymin) * kPadY, g.y1 = ymax + (ymax - ymin) * kPadY;
  return g;
}

Rgb px(const Tensor& img, int64_t row, int64_t col) {
  const uint8_t* p = img.data<uint8_t>() + (row * img.size(1) + col) * 3;
  return {p[0], p[1], p[2]};
}

bool near(Rgb a, Rgb b, int tol) {
  return std::abs(a.r - b.r) <= tol && std::abs(a.g - b.g) <= tol && std::abs(a.b - b.b) <= tol;
}

int64_t count_colour(const Tensor& img, Rgb c) {
  int64_t n = 0;
  for (int64_t r = 0; r < img.size(0); ++r)
    for (int64_t k = 0; k < img.size(1); ++k) n += px(img, r, k) == c;
  return n;
}

// Every lit pixel of `text` drawn at (x, y) has the text colour, and every unlit pixel of its
// glyph cells has `bg`. Returns the number of lit pixels checked.
int check_text(const Tensor& img, int64_t x, int64_t y, const std::string& text, Rgb bg) {
  int lit = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    const auto& rows = glyph_rows(text[i]);
    for (int r = 0; r < kGlyphHeight; ++r)
      for (int c = 0; c < kGlyphWidth; ++c) {
        const bool on = rows[size_t(r)] & (0x10 >> c);
        const Rgb got = px(img, y + r, x + int64_t(i) * kGlyphAdvance + c);
        if (on) {
          ++lit;
          CHECK_MESSAGE(got == kText, "text '", text, "' char ", i, " at row ", r, " col ", c);
        } else {
          CHECK_MESSAGE(got == bg, "text '", text, "' char ", i, " background at row ", r, " col ", c);
        }
      }
  }
  return lit;
}

std::vector<double> iota_x(int n) {
  std::vector<double> x(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) x[size_t(i)] = i;
  return x;
}

}  // namespace

TEST_CASE("plot: a horizontal series lies on the predicted pixel row, in its colour") {
  PlotSeries ramp{"ramp", iota_x(101), {}}, flat{"flat", iota_x(101), {}};
  for (int i = 0; i <= 100; ++i) ramp.y.push_back(i / 10.0), flat.y.push_back(2.0);
  PlotOptions o;
  o.width = 640, o.height = 400;
  const Tensor img = render_line_plot({ramp, flat}, o);
  REQUIRE(img.dtype() == DType::u8);
  REQUIRE(img.sizes() == Dims{400, 640, 3});

  const Geometry g = geometry(640, 400, false, 1, 0, 100, 0, 10);
  const int64_t row = std::lround(g.row(2.0));
  CHECK(row == 282);  // 359 - (2.5 / 11) * 337 = 282.4 (the arithmetic, spelled out once)
  // Right of where the ramp crosses y = 2 (x = 20), the flat line owns its row.
  int on_row = 0;
  for (int64_t c = std::lround(g.col(30)); c <= std::lround(g.col(100)); ++c) on_row += px(img, row, c) == kOrange;
  CHECK(on_row == std::lround(g.col(100)) - std::lround(g.col(30)) + 1);
  // ... and only a thin band around it: 4 rows away there is no orange at all.
  for (int64_t c = std::lround(g.col(30)); c <= std::lround(g.col(100)); c += 7) {
    CHECK_FALSE(near(px(img, row - 4, c), kOrange, 60));
    CHECK_FALSE(near(px(img, row + 4, c), kOrange, 60));
  }
  // The ramp passes through (50, 5) and (80, 8): a sloped 2-px line, so the exact colour is within
  // one pixel of the rounded position.
  for (double x : {50.0, 80.0}) {
    const int64_t r = std::lround(g.row(x / 10)), c = std::lround(g.col(x));
    int exact = 0;
    for (int dr = -1; dr <= 1; ++dr)
      for (int dc = -1; dc <= 1; ++dc) exact += px(img, r + dr, c + dc) == kBlue;
    CHECK(exact >= 2);
  }
  CHECK(count_colour(img, kBlue) > 400);
  CHECK(count_colour(img, kGreen) == 0);  // no third series, no third colour

  // The frame lies on the documented lines.
  CHECK(px(img, int64_t(g.y_bottom), 300) == kFrame);
  CHECK(px(img, int64_t(g.y_top), 300) == kFrame);
  CHECK(px(img, 150, int64_t(g.x_left)) == kFrame);
  CHECK(px(img, 150, int64_t(g.x_right)) == kFrame);
}

TEST_CASE("plot: legend samples and names, title, tick labels") {
  PlotSeries a{"G loss", {0, 1, 2, 3}, {1, 3, 2, 4}}, b{"D loss", {0, 1, 2, 3}, {0, 1, 0, 1}};
  PlotOptions o;
  o.width = 500, o.height = 300, o.title = "Losses", o.x_label = "step";
  const Tensor img = render_line_plot({a, b}, o);
  const int64_t legend_y = kTopPad + kTitleBand;
  // Entry 0 at kLeft: an 18x3 sample at rows +2..+4, the name 23 px further right.
  for (int64_t c = kLeft; c < kLeft + 18; ++c) CHECK(px(img, legend_y + 3, c) == kBlue);
  CHECK(check_text(img, kLeft + 23, legend_y, "G loss", kWhite) > 30);
  // Entry 1 after name width (6 chars * 6 - 1 = 35 px) and 14 px of spacing.
  const int64_t x1 = kLeft + 18 + 5 + 35 + 14;
  for (int64_t c = x1; c < x1 + 18; ++c) CHECK(px(img, legend_y + 3, c) == kOrange);
  CHECK(check_text(img, x1 + 23, legend_y, "D loss", kWhite) > 30);

  // Title: scale 2, centred, top at kTopPad - 2; its first lit pixel is 'L''s top-left.
  const int64_t tw = (6 * 6 - 1) * 2, tx = (500 - tw) / 2;
  CHECK(px(img, kTopPad - 2, tx) == kText);
  CHECK(px(img, kTopPad - 2 + 13, tx + 1) == kText);

  // y tick labels: 0 and 4 are ticks of any 1-2-5 step over [0, 4]; right-aligned 7 px left of
  // the frame, vertically centred on the tick row (top = row - 3).
  const Geometry g = geometry(500, 300, true, 1, 0, 3, 0, 4);
  for (const std::string label : {"0", "4"}) {
    const int64_t r = std::lround(g.row(std::stod(label)));
    const int64_t w = int64_t(label.size()) * 6 - 1;
    CHECK(check_text(img, kLeft - 7 - w, r - 3, label, kWhite) > 5);
  }
}

TEST_CASE("plot: non-finite values leave a gap") {
  PlotSeries anchor{"range", {0, 100}, {0, 10}};
  PlotSeries gappy{"gappy", iota_x(101), std::vector<double>(101, 5.0)};
  for (int i = 40; i <= 60; ++i) gappy.y[size_t(i)] = (i % 3 == 0) ? kNaN : std::numeric_limits<double>::infinity();
  gappy.x[50] = kNaN;
  PlotOptions o;
  o.width = 640, o.height = 400;
  const Tensor img = render_line_plot({anchor, gappy}, o);
  const Geometry g = geometry(640, 400, false, 1, 0, 100, 0, 10);
  const int64_t row = std::lround(g.row(5.0));
  // The line is there before and after the gap ...
  CHECK(px(img, row, std::lround(g.col(20))) == kOrange);
  CHECK(px(img, row, std::lround(g.col(80))) == kOrange);
  // ... and the gap's columns hold no orange in any row (the line ends at x = 39 and restarts at 61).
  const int64_t c0 = std::lround(g.col(39)) + 3, c1 = std::lround(g.col(61)) - 3;
  REQUIRE(c1 - c0 > 100);
  int64_t orange = 0;
  for (int64_t r = int64_t(g.y_top) + 1; r < int64_t(g.y_bottom); ++r)
    for (int64_t c = c0; c <= c1; ++c) orange += near(px(img, r, c), kOrange, 90) ? 1 : 0;
  CHECK(orange == 0);
}

TEST_CASE("plot: moving-average smoothing") {
  // 0, 10, 0, 10, ... smoothed with a window of 2 (points i-1 and i) is 5 from the second point on.
  // Two constant series (unchanged by smoothing) pin the y range to [0, 10].
  PlotSeries low{"low", {0, 100}, {0, 0}}, high{"high", {0, 100}, {10, 10}};
  PlotSeries zig{"zig", iota_x(101), {}};
  for (int i = 0; i <= 100; ++i) zig.y.push_back(i % 2 ? 10.0 : 0.0);
  PlotOptions o;
  o.width = 640, o.height = 400, o.smooth = 2;
  const Tensor img = render_line_plot({low, high, zig}, o);
  const Geometry g = geometry(640, 400, false, 1, 0, 100, 0, 10);
  for (double x : {10.0, 30.0, 55.0, 90.0}) {
    CHECK(px(img, std::lround(g.row(5.0)), std::lround(g.col(x))) == kGreen);
    CHECK_FALSE(near(px(img, std::lround(g.row(9.0)), std::lround(g.col(x))), kGreen, 90));
    CHECK_FALSE(near(px(img, std::lround(g.row(1.0)), std::lround(g.col(x))), kGreen, 90));
  }
  // Raw (smooth = 1), the same series fills the band between 0 and 10 with near-vertical lines.
  o.smooth = 1;
  const Tensor raw = render_line_plot({low, high, zig}, o);
  CHECK(count_colour(raw, kGreen) > 3 * count_colour(img, kGreen));
  CHECK_THROWS_AS(render_line_plot({zig}, PlotOptions{640, 400, "", "step", 0}), Error);
}

TEST_CASE("plot: one point, a constant series, empty and all-NaN input give a clear picture") {
  PlotOptions o;
  o.width = 400, o.height = 300;
  const double cx = (kLeft + (400 - 1 - kRight)) / 2.0;
  const double cy = (kTopPad + kLegendRow + (300 - 1 - kBottom)) / 2.0;

  // One point: the range is centred on it, so it is drawn (as a dot) at the centre.
  const Tensor one = render_line_plot({{"one", {7.0}, {3.5}}}, o);
  CHECK(px(one, std::lround(cy), std::lround(cx)) == kBlue);
  CHECK(count_colour(one, kBlue) > 18 * 3);  // the dot and the legend sample

  // A constant series: a horizontal line through the middle.
  const Tensor flat = render_line_plot({{"flat", {0, 1, 2, 3}, {0.25, 0.25, 0.25, 0.25}}}, o);
  for (int64_t c = kLeft + 10; c < 400 - kRight - 10; c += 13) CHECK(px(flat, std::lround(cy), c) == kBlue);

  // No series, an empty series, only NaN: no crash, a frame, no series colour in the plot area.
  for (const auto& series : {std::vector<PlotSeries>{}, std::vector<PlotSeries>{{"empty", {}, {}}},
                             std::vector<PlotSeries>{{"nan", {0, 1}, {kNaN, kNaN}}}}) {
    const Tensor img = render_line_plot(series, o);
    REQUIRE(img.sizes() == Dims{300, 400, 3});
    const int64_t bottom = 300 - 1 - kBottom;
    CHECK(px(img, bottom, 200) == kFrame);
    int64_t blue_in_plot = 0;
    for (int64_t r = kTopPad + kLegendRow + 1; r < bottom; ++r)
      for (int64_t c = kLeft + 1; c < 400 - 1 - kRight; ++c) blue_in_plot += px(img, r, c) == kBlue;
    CHECK(blue_in_plot == 0);
  }

  CHECK_THROWS_WITH_AS(render_line_plot({{"bad", {0, 1, 2}, {0, 1}}}, o), doctest::Contains("'bad'"), Error);
  CHECK_THROWS_AS(render_line_plot({}, PlotOptions{50, 50, "", "", 1}), Error);
}

TEST_CASE("plot: many series get distinct colours; huge and tiny values give distinct tick labels") {
  std::vector<PlotSeries> many;
  for (int k = 0; k < 14; ++k) many.push_back({"s" + std::to_string(k), {0, 1}, {double(k), double(k) + 0.5}});
  PlotOptions o;
  const Tensor img = render_line_plot(many, o);
  // Each legend sample's colour is unique among the 14.
  std::set<std::tuple<int, int, int>> colours;
  int64_t x = kLeft;
  for (int k = 0; k < 14; ++k) {
    const Rgb c = px(img, kTopPad + 3, x);
    colours.insert({c.r, c.g, c.b});
    CHECK_FALSE(c == kWhite);
    x += 18 + 5 + int64_t(("s" + std::to_string(k)).size()) * 6 - 1 + 14;
  }
  CHECK(colours.size() == 14);
  // Values around 1e9 and 1e-7 render without error (labels switch to exponent form).
  CHECK_NOTHROW(render_line_plot({{"big", {0, 1, 2}, {1.2345e9, 1.2346e9, 1.2347e9}}}, o));
  CHECK_NOTHROW(render_line_plot({{"small", {0, 1, 2}, {1e-7, 3e-7, 2e-7}}}, o));
}

TEST_CASE("write_line_plot writes the rendered picture as a PNG") {
  std::string tmpl = (fs::temp_directory_path() / "engine_plot_XXXXXX").string();
  REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
  const std::string path = tmpl + "/loss.png";
  const std::vector<PlotSeries> s = {{"G", {0, 1, 2}, {1, 0.5, 0.7}}};
  write_line_plot(path, s);
  const Tensor back = read_image(path, 3);
  CHECK(back.to_vector() == render_line_plot(s).to_vector());
  fs::remove_all(tmpl);
}

TEST_CASE("bitmap font: 95 distinct printable glyphs; width; clipping") {
  std::set<std::array<uint8_t, kGlyphHeight>> shapes;
  for (int c = 32; c <= 126; ++c) {
    const auto& g = glyph_rows(char(c));
    int lit = 0;
    for (uint8_t row : g) {
      CHECK(row < 32);  // 5 columns
      lit += __builtin_popcount(row);
    }
    if (c == ' ') CHECK(lit == 0);
    else CHECK_MESSAGE(lit > 0, "glyph ", c, " is empty");
    shapes.insert(g);
  }
  CHECK(shapes.size() == 95);
  CHECK(glyph_rows('\t') == glyph_rows('?'));
  CHECK(text_width("") == 0);
  CHECK(text_width("ab") == 11);
  CHECK(text_width("ab", 2) == 22);
  // Drawing partly outside the image touches only pixels inside it.
  std::vector<uint8_t> canvas(10 * 6 * 3, 255);
  draw_text(canvas.data(), 10, 6, -3, -2, "HH", Rgb{0, 0, 0}, 2);
  int dark = 0;
  for (size_t i = 0; i < canvas.size(); i += 3) dark += canvas[i] == 0;
  CHECK(dark > 0);
}
