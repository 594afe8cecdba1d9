// Tests of aurora/router_viz (the per-pixel expert picture, Fig. 6 of the Aurora paper): panel
// placement from the documented layout, nearest upsampling of each map, the image panel, the
// legend, errors, and the expert ids of a real MoE forward (nn/moe.h) end to end.
#include <doctest/doctest.h>

#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "aurora/router_viz.h"
#include "io/image.h"
#include "nn/module.h"
#include "nn/moe.h"
#include "tensor/error.h"

using namespace engine;
using namespace engine::aurora;
using io::Rgb;
namespace fs = std::filesystem;

namespace {

Rgb px(const Tensor& img, int64_t row, int64_t col) {
  const uint8_t* p = img.data<uint8_t>() + (row * img.size(1) + col) * 3;
  return {p[0], p[1], p[2]};
}

// Top-left pixel of panel k, from the layout documented in router_viz.h.
std::pair<int64_t, int64_t> panel_origin(int64_t k, int64_t columns, int64_t cell) {
  return {kRouterPad + (k / columns) * (kRouterLabel + cell + kRouterPad) + kRouterLabel,
          kRouterPad + (k % columns) * (cell + kRouterPad)};
}

Tensor ids(const std::vector<int64_t>& v) { return from_vector_i64(v, {int64_t(v.size())}); }

}  // namespace

TEST_CASE("expert_colour: distinct, well separated colours for the first 32 experts") {
  std::set<std::tuple<int, int, int>> seen;
  for (int64_t e = 0; e < 32; ++e) {
    const Rgb c = expert_colour(e);
    seen.insert({c.r, c.g, c.b});
    CHECK_FALSE((c == Rgb{255, 255, 255}));
    for (int64_t f = 0; f < e; ++f) {
      const Rgb d = expert_colour(f);
      const int dist = std::abs(c.r - d.r) + std::abs(c.g - d.g) + std::abs(c.b - d.b);
      CHECK_MESSAGE(dist >= 24, "experts ", e, " and ", f, " look alike");
    }
  }
  CHECK(seen.size() == 32);
  CHECK_THROWS_AS(expert_colour(-1), Error);
}

TEST_CASE("router maps: each token becomes a block of its expert's colour, in the documented panel") {
  // Two layers: 2x2 and 4x4 maps, cell 8 (blocks of 4x4 and 2x2 pixels), no image, 2 columns.
  const std::vector<int64_t> a = {0, 1, 2, 3};
  std::vector<int64_t> b(16);
  for (int64_t t = 0; t < 16; ++t) b[size_t(t)] = (t * 7 + 3) % 5;
  RouterVizOptions o;
  o.cell = 8, o.columns = 2;
  const Tensor img = render_router_maps(Tensor(), {{"b4.attn0", 2, ids(a)}, {"b8.attn0", 4, ids(b)}}, o);
  REQUIRE(img.dtype() == DType::u8);
  CHECK(img.size(1) == kRouterPad + 2 * (8 + kRouterPad));
  for (int layer = 0; layer < 2; ++layer) {
    const int64_t r = layer == 0 ? 2 : 4;
    const std::vector<int64_t>& m = layer == 0 ? a : b;
    const auto [y0, x0] = panel_origin(layer, 2, 8);
    for (int64_t y = 0; y < 8; ++y)
      for (int64_t x = 0; x < 8; ++x) {
        const int64_t token = (y / (8 / r)) * r + x / (8 / r);  // 8 / r pixels per token
        CHECK(px(img, y0 + y, x0 + x) == expert_colour(m[size_t(token)]));
      }
    // The pixels around the panel are background (no bleeding).
    CHECK((px(img, y0 - 1, x0) == Rgb{255, 255, 255}));
    CHECK((px(img, y0, x0 + 8) == Rgb{255, 255, 255}));
    CHECK((px(img, y0 + 8, x0) == Rgb{255, 255, 255}));
  }
  // Legend: 5 experts (1 + the largest index), each colour present below the panels.
  const int64_t legend_top = kRouterPad + 1 * (kRouterLabel + 8 + kRouterPad);
  for (int64_t e = 0; e < 5; ++e) {
    bool found = false;
    for (int64_t y = legend_top; y < img.size(0) && !found; ++y)
      for (int64_t x = 0; x < img.size(1) && !found; ++x) found = px(img, y, x) == expert_colour(e);
    CHECK_MESSAGE(found, "legend swatch of expert ", e);
  }
  bool sixth = false;
  for (int64_t y = 0; y < img.size(0); ++y)
    for (int64_t x = 0; x < img.size(1); ++x) sixth |= px(img, y, x) == expert_colour(5);
  CHECK_FALSE(sixth);
}

TEST_CASE("router maps: the image panel comes first, resampled to the panel (nearest)") {
  // A 4x4 u8 image shown in 8x8 panels: each pixel becomes a 2x2 block.
  Tensor image = empty({4, 4, 3}, opts(DType::u8));
  for (int64_t i = 0; i < 48; ++i) image.data<uint8_t>()[i] = uint8_t(i * 5);
  RouterVizOptions o;
  o.cell = 8, o.num_experts = 3;
  const Tensor img = render_router_maps(image, {{"b4", 2, ids({2, 2, 2, 1})}}, o);
  CHECK(img.size(1) == kRouterPad + 2 * (8 + kRouterPad));
  const auto [y0, x0] = panel_origin(0, 2, 8);
  for (int64_t y = 0; y < 8; ++y)
    for (int64_t x = 0; x < 8; ++x) {
      const uint8_t* s = image.data<uint8_t>() + ((y / 2) * 4 + x / 2) * 3;
      CHECK(px(img, y0 + y, x0 + x) == Rgb{s[0], s[1], s[2]});
    }
  const auto [y1, x1] = panel_origin(1, 2, 8);
  CHECK(px(img, y1, x1) == expert_colour(2));
  CHECK(px(img, y1 + 7, x1 + 7) == expert_colour(1));

  // The float layout of a generated sample ([C, H, W] in [-1, 1]) gives the same picture.
  const Tensor chw = io::to_float(image);
  CHECK(render_router_maps(chw, {{"b4", 2, ids({2, 2, 2, 1})}}, o).to_vector() == img.to_vector());

  // Caption text is drawn in the label band above each panel (dark pixels there).
  int dark = 0;
  for (int64_t y = y1 - kRouterLabel; y < y1; ++y)
    for (int64_t x = x1; x < x1 + 8; ++x) dark += px(img, y, x).r < 100;
  CHECK(dark > 0);
}

TEST_CASE("router maps: bad maps are errors naming the layer") {
  RouterVizOptions o;
  o.num_experts = 4;
  CHECK_THROWS_WITH_AS(render_router_maps(Tensor(), {{"b8.attn1", 3, ids({0, 1, 2, 3})}}, o),
                       doctest::Contains("b8.attn1"), Error);
  CHECK_THROWS_WITH_AS(render_router_maps(Tensor(), {{"b4.x", 2, ids({0, 1, 4, 3})}}, o),
                       doctest::Contains("expert index 4"), Error);
  CHECK_THROWS_WITH_AS(render_router_maps(Tensor(), {{"neg", 2, ids({0, -1, 0, 0})}}, {}), doctest::Contains("neg"),
                       Error);
  CHECK_THROWS_AS(render_router_maps(Tensor(), {}, {}), Error);
  CHECK_THROWS_AS(render_router_maps(zeros({4, 4, 2}, opts(DType::f32)), {}, {}), Error);
}

TEST_CASE("router maps from a real MoE forward (expert_ids of nn::MoE)") {
  nn::MoEConfig cfg;
  cfg.channels = 8, cfg.hidden = 16, cfg.num_experts = 4, cfg.w_dim = 6;
  nn::MoE moe(cfg);
  nn::ParameterStore store;
  store.materialize(moe, 7, TensorOptions{DType::f32, Device::cpu(), memory::Kind::param});
  Generator g(11);
  const int64_t B = 2, res = 4;
  const Tensor x = randn({B, res * res, cfg.channels}, g), w = randn({B, cfg.w_dim}, g);
  const nn::MoEOutput out = moe.forward(x, w);
  REQUIRE(out.expert_ids.sizes() == Dims{B, res * res});
  // The ids are the argmax of the router logits, recomputed here from the routing.
  const nn::MoERouting routing = moe.route(x, w);
  const std::vector<double> logits = routing.logits.to_vector(), got = out.expert_ids.to_vector();
  for (int64_t t = 0; t < B * res * res; ++t) {
    int64_t best = 0;
    for (int64_t e = 1; e < cfg.num_experts; ++e)
      if (logits[size_t(t * cfg.num_experts + e)] > logits[size_t(t * cfg.num_experts + best)]) best = e;
    CHECK(int64_t(got[size_t(t)]) == best);
  }

  const RouterMap m = router_map_from_ids("moe", res, out.expert_ids, 1);
  CHECK(m.expert_index.to_vector() == out.expert_ids.narrow(0, 1, 1).reshape({res * res}).to_vector());
  RouterVizOptions o;
  o.cell = 16, o.num_experts = cfg.num_experts;
  const Tensor img = render_router_maps(Tensor(), {m}, o);
  const auto [y0, x0] = panel_origin(0, 1, 16);
  for (int64_t t = 0; t < res * res; ++t) {
    const int64_t ty = t / res, tx = t % res;  // token t = y * res + x, a 4x4 block
    for (int64_t dy = 0; dy < 4; ++dy)
      for (int64_t dx = 0; dx < 4; ++dx)
        CHECK(px(img, y0 + ty * 4 + dy, x0 + tx * 4 + dx) == expert_colour(int64_t(got[size_t(res * res + t)])));
  }
  CHECK_THROWS_AS(router_map_from_ids("moe", res, out.expert_ids, 2), Error);

  // write_router_maps writes the same picture as a PNG.
  const std::string path = (fs::temp_directory_path() / "engine_router_viz_test.png").string();
  write_router_maps(path, Tensor(), {m}, o);
  CHECK(io::read_image(path, 3).to_vector() == img.to_vector());
  fs::remove(path);
}
