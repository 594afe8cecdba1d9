// router_viz.cpp: the per-pixel expert picture of aurora/router_viz.h (Aurora paper, Fig. 6).
//
// Everything is plain nearest-neighbour painting on a u8 canvas: a panel pixel (y, x) of a layer
// whose map is r x r shows the expert of token (y * r / cell) * r + (x * r / cell) (integer
// division), so each token becomes a block of (cell / r)^2 pixels and no colour is ever blended
// (a blended colour would look like a different expert).
#include "aurora/router_viz.h"

#include <algorithm>
#include <cmath>

#include "io/image.h"
#include "tensor/error.h"

namespace engine::aurora {

namespace {

constexpr int64_t kLegendRow = 14, kSwatch = 10, kSwatchGap = 3, kLegendSpacing = 9;
const io::Rgb kBackground{255, 255, 255};
const io::Rgb kText{20, 20, 20};

struct Canvas {
  int64_t w, h;
  uint8_t* p;
  void set(int64_t x, int64_t y, io::Rgb c) {
    if (x < 0 || y < 0 || x >= w || y >= h) return;
    uint8_t* q = p + (y * w + x) * 3;
    q[0] = c.r, q[1] = c.g, q[2] = c.b;
  }
  void fill(int64_t x, int64_t y, int64_t fw, int64_t fh, io::Rgb c) {
    for (int64_t j = 0; j < fh; ++j)
      for (int64_t i = 0; i < fw; ++i) set(x + i, y + j, c);
  }
};

// Text clipped to at most `max_width` pixels (whole characters).
std::string fit_text(const std::string& s, int64_t max_width) {
  const int64_t chars = std::max<int64_t>(0, (max_width + 1) / io::kGlyphAdvance);
  return int64_t(s.size()) <= chars ? s : s.substr(0, size_t(chars));
}

// u8 [H, W, C] on the CPU, contiguous, from either accepted layout.
Tensor image_hwc(const Tensor& image) {
  Tensor t = image.device().is_cpu() ? image : image.to(Device::cpu());
  if (t.dtype() != DType::u8) {
    ENGINE_CHECK(t.dim() == 3 && (t.size(0) == 1 || t.size(0) == 3),
                 "render_router_maps: a float image must be [C, H, W] with C = 1 or 3, got {}", t.sizes().str());
    t = io::to_u8(t.detach());
  }
  ENGINE_CHECK(t.dim() == 3 && (t.size(2) == 1 || t.size(2) == 3 || t.size(2) == 4),
               "render_router_maps: a u8 image must be [H, W, C] with C = 1, 3 or 4, got {}", t.sizes().str());
  ENGINE_CHECK(t.size(0) > 0 && t.size(1) > 0, "render_router_maps: empty image {}", t.sizes().str());
  return t.contiguous();
}

struct LegendItem {
  int64_t x, row;
};

}  // namespace

io::Rgb expert_colour(int64_t e) {
  static const io::Rgb kelly[20] = {
      {0xF3, 0xC3, 0x00}, {0x87, 0x56, 0x92}, {0xF3, 0x84, 0x00}, {0xA1, 0xCA, 0xF1}, {0xBE, 0x00, 0x32},
      {0xC2, 0xB2, 0x80}, {0x84, 0x84, 0x82}, {0x00, 0x88, 0x56}, {0xE6, 0x8F, 0xAC}, {0x00, 0x67, 0xA5},
      {0xF9, 0x93, 0x79}, {0x60, 0x4E, 0x97}, {0xF6, 0xA6, 0x00}, {0xB3, 0x44, 0x6C}, {0xDC, 0xD3, 0x00},
      {0x88, 0x2D, 0x17}, {0x8D, 0xB6, 0x00}, {0x65, 0x45, 0x22}, {0xE2, 0x58, 0x22}, {0x2B, 0x3D, 0x26}};
  ENGINE_CHECK(e >= 0, "expert_colour: negative expert index {}", e);
  if (e < 20) return kelly[e];
  // Golden-angle hues at two alternating lightness levels.
  const double h = std::fmod(double(e) * 0.618033988749895, 1.0) * 6.0;
  const double s = 0.7, v = (e % 2) ? 0.95 : 0.65;
  const int sector = int(h);
  const double f = h - sector, p = v * (1 - s), q = v * (1 - s * f), t = v * (1 - s * (1 - f));
  const double rgb[6][3] = {{v, t, p}, {q, v, p}, {p, v, t}, {p, q, v}, {t, p, v}, {v, p, q}};
  const double* c = rgb[sector % 6];
  return {uint8_t(std::lround(c[0] * 255)), uint8_t(std::lround(c[1] * 255)), uint8_t(std::lround(c[2] * 255))};
}

RouterMap router_map_from_ids(std::string name, int64_t resolution, const Tensor& expert_ids, int64_t b) {
  ENGINE_CHECK(expert_ids.defined() && expert_ids.dim() == 2,
               "router_map_from_ids: layer '{}': expert ids must be [B, T], got {}", name,
               expert_ids.defined() ? expert_ids.sizes().str() : std::string("an undefined tensor"));
  ENGINE_CHECK(b >= 0 && b < expert_ids.size(0), "router_map_from_ids: layer '{}': image {} out of range (batch {})",
               name, b, expert_ids.size(0));
  RouterMap m;
  m.name = std::move(name);
  m.resolution = resolution;
  m.expert_index = expert_ids.detach().narrow(0, b, 1).reshape({expert_ids.size(1)});
  return m;
}

Tensor render_router_maps(const Tensor& image, const std::vector<RouterMap>& maps, const RouterVizOptions& options) {
  const Tensor img = image.defined() ? image_hwc(image) : Tensor();
  ENGINE_CHECK(img.defined() || !maps.empty(), "render_router_maps: no image and no router maps");

  // Expert indices on the CPU as i64, checked against the map sizes.
  std::vector<std::vector<int64_t>> idx(maps.size());
  int64_t max_index = -1;
  for (size_t k = 0; k < maps.size(); ++k) {
    const RouterMap& m = maps[k];
    ENGINE_CHECK(m.resolution > 0, "render_router_maps: layer '{}': resolution must be > 0, got {}", m.name,
                 m.resolution);
    ENGINE_CHECK(m.expert_index.defined() && m.expert_index.numel() == m.resolution * m.resolution,
                 "render_router_maps: layer '{}': expected {}x{} = {} expert indices, got {}", m.name, m.resolution,
                 m.resolution, m.resolution * m.resolution,
                 m.expert_index.defined() ? m.expert_index.sizes().str() : std::string("an undefined tensor"));
    const Tensor t = m.expert_index.detach().to(Device::cpu()).to(DType::i64).contiguous();
    idx[k].assign(t.data<int64_t>(), t.data<int64_t>() + t.numel());
    for (int64_t e : idx[k]) {
      ENGINE_CHECK(e >= 0 && (options.num_experts <= 0 || e < options.num_experts),
                   "render_router_maps: layer '{}': expert index {} out of range (num_experts {})", m.name, e,
                   options.num_experts);
      max_index = std::max(max_index, e);
    }
  }
  const int64_t num_experts = options.num_experts > 0 ? options.num_experts : max_index + 1;

  const int64_t cell = options.cell > 0 ? options.cell : std::max<int64_t>(128, img.defined() ? img.size(0) : 0);
  ENGINE_CHECK(cell <= 4096, "render_router_maps: cell {} too large (at most 4096)", cell);
  const int64_t panels = int64_t(maps.size()) + (img.defined() ? 1 : 0);
  const int64_t columns = options.columns > 0 ? std::min(options.columns, panels) : panels;
  const int64_t rows = (panels + columns - 1) / columns;
  const int64_t W = kRouterPad + columns * (cell + kRouterPad);

  // Legend layout: "experts" then, per expert, a swatch and its index, wrapping at the right edge.
  const std::string legend_title = "experts";
  std::vector<LegendItem> items;
  int64_t lx = kRouterPad + io::text_width(legend_title) + kLegendSpacing, lrow = 0;
  for (int64_t e = 0; e < num_experts; ++e) {
    const int64_t w = kSwatch + kSwatchGap + io::text_width(std::to_string(e));
    if (lx + w > W - kRouterPad && lx > kRouterPad) lx = kRouterPad, ++lrow;
    items.push_back({lx, lrow});
    lx += w + kLegendSpacing;
  }
  const int64_t legend_top = kRouterPad + rows * (kRouterLabel + cell + kRouterPad);
  const int64_t H = legend_top + (lrow + 1) * kLegendRow + kRouterPad;

  Tensor out = empty({H, W, 3}, opts(DType::u8));
  Canvas cv{W, H, out.data<uint8_t>()};
  cv.fill(0, 0, W, H, kBackground);
  auto panel_origin = [&](int64_t k, int64_t* x, int64_t* y) {
    *x = kRouterPad + (k % columns) * (cell + kRouterPad);
    *y = kRouterPad + (k / columns) * (kRouterLabel + cell + kRouterPad) + kRouterLabel;
  };

  int64_t k = 0;
  if (img.defined()) {
    int64_t x0, y0;
    panel_origin(k++, &x0, &y0);
    io::draw_text(cv.p, W, H, x0, y0 - kRouterLabel + 2, fit_text("image", cell), kText);
    const int64_t ih = img.size(0), iw = img.size(1), ic = img.size(2);
    const uint8_t* src = img.data<uint8_t>();
    for (int64_t y = 0; y < cell; ++y)
      for (int64_t x = 0; x < cell; ++x) {
        const uint8_t* s = src + ((y * ih / cell) * iw + (x * iw / cell)) * ic;
        // Grey is replicated; alpha is shown over the white background.
        io::Rgb c = ic == 1 ? io::Rgb{s[0], s[0], s[0]} : io::Rgb{s[0], s[1], s[2]};
        if (ic == 4) {
          const int a = s[3];
          auto over = [a](int v) { return uint8_t((v * a + 255 * (255 - a) + 127) / 255); };
          c = {over(c.r), over(c.g), over(c.b)};
        }
        cv.set(x0 + x, y0 + y, c);
      }
  }
  for (size_t m = 0; m < maps.size(); ++m) {
    int64_t x0, y0;
    panel_origin(k++, &x0, &y0);
    const int64_t r = maps[m].resolution;
    // Resolution first: a long layer name is what gets cut when the caption is wider than the panel.
    const std::string caption = fmt::format("{}x{} {}", r, r, maps[m].name);
    io::draw_text(cv.p, W, H, x0, y0 - kRouterLabel + 2, fit_text(caption, cell), kText);
    for (int64_t y = 0; y < cell; ++y)
      for (int64_t x = 0; x < cell; ++x) cv.set(x0 + x, y0 + y, expert_colour(idx[m][size_t((y * r / cell) * r + x * r / cell)]));
  }

  io::draw_text(cv.p, W, H, kRouterPad, legend_top + (kSwatch - io::kGlyphHeight) / 2, legend_title, kText);
  for (int64_t e = 0; e < num_experts; ++e) {
    const int64_t x = items[size_t(e)].x, y = legend_top + items[size_t(e)].row * kLegendRow;
    cv.fill(x, y, kSwatch, kSwatch, expert_colour(e));
    io::draw_text(cv.p, W, H, x + kSwatch + kSwatchGap, y + (kSwatch - io::kGlyphHeight) / 2, std::to_string(e), kText);
  }
  return out;
}

void write_router_maps(const std::string& path, const Tensor& image, const std::vector<RouterMap>& maps,
                       const RouterVizOptions& options) {
  io::write_png(path, render_router_maps(image, maps, options));
}

}  // namespace engine::aurora
