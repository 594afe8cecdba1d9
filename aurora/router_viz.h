// router_viz.h: the router picture of the Aurora paper (Fig. 6): for one generated image, which
// expert each pixel's token was sent to, in every MoE layer, one colour per expert.
//
// Input is what the MoE layers already return (nn/moe.h: MoEOutput::expert_ids, i64 [B, T], the
// tokens of a [B, C, H, W] feature map in row-major order, token = y * W + x); the generator
// collects one RouterMap per MoE layer (docs/run-outputs.md, "Router maps"). Output is a u8
// [H, W, 3] picture, ready for io::write_png:
//
//   +--------+ +--------+ +--------+      panel 0: the image ("image")
//   | image  | | b8.a0  | | b16.a0 | ...  panel k: layer k-1's expert index per pixel, upsampled
//   +--------+ +--------+ +--------+      (nearest) from resolution x resolution to the panel
//   [] 0  [] 1  [] 2 ...                  legend: a swatch and the index of each expert
//
// Layout (pixels): panels of `cell` x `cell`, `columns` per row, kRouterPad between panels and
// around the picture, a kRouterLabel band above each panel with its caption (5x7 font), the
// legend strip below the last row. Panel k sits at column kRouterPad + (k % columns) *
// (cell + kRouterPad) and row kRouterPad + (k / columns) * (kRouterLabel + cell + kRouterPad) +
// kRouterLabel.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "io/bitmap_font.h"
#include "tensor/tensor.h"

namespace engine::aurora {

inline constexpr int64_t kRouterPad = 6;     // pixels between and around panels
inline constexpr int64_t kRouterLabel = 12;  // caption band above each panel

// One MoE layer's routing decision for one image.
struct RouterMap {
  std::string name;         // caption, e.g. "b16.attn0.block0"
  int64_t resolution = 0;   // the layer's feature map is resolution x resolution
  Tensor expert_index;      // integer [T], T = resolution^2, token y * resolution + x (any device)
};

struct RouterVizOptions {
  int64_t cell = 0;         // panel side in pixels; 0 = max(128, image height)
  int64_t columns = 0;      // panels per row (the image counts); 0 = all in one row
  int64_t num_experts = 0;  // colours in the legend; 0 = 1 + the largest index in the maps
};

// The colour of expert e: Kelly's 20 colours of maximum contrast (white and black left out,
// since they read as background and text), then hues spaced by the golden angle.
io::Rgb expert_colour(int64_t e);

// Row `b` of a layer's expert ids [B, T] (MoEOutput::expert_ids) as a RouterMap.
RouterMap router_map_from_ids(std::string name, int64_t resolution, const Tensor& expert_ids, int64_t b);

// The picture. `image` is u8 [H, W, C] (C = 1, 3 or 4) or a float [C, H, W] in [-1, 1] (C = 1 or
// 3, the generator's output for one sample), resampled (nearest) to the panel size; an undefined
// tensor leaves the image panel out. Throws engine::Error naming the layer for a map whose size is
// not resolution^2 or whose index is negative or >= num_experts.
Tensor render_router_maps(const Tensor& image, const std::vector<RouterMap>& maps, const RouterVizOptions& options = {});
// render_router_maps + io::write_png (atomic).
void write_router_maps(const std::string& path, const Tensor& image, const std::vector<RouterMap>& maps,
                       const RouterVizOptions& options = {});

}  // namespace engine::aurora
