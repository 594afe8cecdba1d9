// plot.h: loss curves as a PNG, with no plotting library (DESIGN.md section 11: "loss curves as a
// PNG plot").
//
// A line chart rasterised into an RGB u8 image: axes with tick labels, one coloured polyline per
// series (anti-aliased), a legend, a title; text drawn with a built-in 5x7 bitmap font (ASCII
// 32..126). Non-finite values are skipped (a gap in the line). Optional moving-average smoothing,
// since GAN losses are noisy.
#pragma once
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace engine::io {

struct PlotSeries {
  std::string name;
  std::vector<double> x, y;  // same length
};

struct PlotOptions {
  int width = 960, height = 540;
  std::string title;
  std::string x_label = "step";
  int smooth = 1;  // moving-average window in points (1 = raw)
};

// u8 [height, width, 3].
Tensor render_line_plot(const std::vector<PlotSeries>& series, const PlotOptions& options = {});
// render_line_plot + write_png (atomically).
void write_line_plot(const std::string& path, const std::vector<PlotSeries>& series, const PlotOptions& options = {});

}  // namespace engine::io
