// discriminator.cpp: the MS-I/O discriminator (see discriminator.h).
#include "aurora/discriminator.h"

#include <algorithm>
#include <string>

#include "tensor/memory/profiler.h"

namespace engine::aurora {

namespace {
const DiscriminatorConfig& validated(const DiscriminatorConfig& c) {
  c.validate("Discriminator config");
  return c;
}
}  // namespace

Discriminator::Discriminator(const DiscriminatorConfig& cfg)
    : Module("Discriminator"),
      config(validated(cfg)),
      text(register_module<nn::DiscTextMLP>("text", cfg.text_dim, cfg.cond_dim, cfg.text_layers)) {
  const std::vector<int64_t> entries = cfg.entry_resolutions(), exits = cfg.exit_resolutions();
  for (size_t k = 0; k < entries.size(); ++k) {
    const int64_t r = entries[k];
    levels.push_back(&register_module<nn::DiscLevel>("b" + std::to_string(r), r, cfg.image_channels,
                                                     cfg.channels_at(r), cfg.channels_at(exits[k]),
                                                     cfg.has_attention(r) ? cfg.attention_head_dim : 0));
  }
  for (int64_t r : exits) {
    predictors.push_back(
        &register_module<nn::DiscPredictor>("pred" + std::to_string(r), cfg.channels_at(r), cfg.cond_dim,
                                            cfg.predictor_layers));
  }
}

std::vector<DiscPrediction> Discriminator::forward(const TensorList& pyramid, const Tensor& t_D) const {
  memory::ModuleScope scope("D");
  Tensor c;
  {
    memory::ModuleScope text_scope("text");
    c = text.forward(t_D);
  }
  return run(pyramid, c);
}

std::vector<DiscPrediction> Discriminator::forward_with_condition(const TensorList& pyramid, const Tensor& c) const {
  memory::ModuleScope scope("D");
  return run(pyramid, c);
}

std::vector<DiscPrediction> Discriminator::run(const TensorList& pyramid, const Tensor& c) const {
  const int64_t L = int64_t(levels.size());
  ENGINE_CHECK(int64_t(pyramid.size()) == L,
               "Discriminator: expected a pyramid of {} images (resolutions {} down to 4), got {}", L,
               config.image_size, pyramid.size());
  ENGINE_CHECK(pyramid[0].defined() && pyramid[0].dim() == 4, "Discriminator: pyramid[0] must be [B, {}, {}, {}]",
               config.image_channels, config.image_size, config.image_size);
  const int64_t B = pyramid[0].size(0);
  for (int64_t k = 0; k < L; ++k) {
    const Tensor& x = pyramid[size_t(k)];
    const int64_t r = levels[size_t(k)]->entry_resolution;
    ENGINE_CHECK(x.defined() && x.dim() == 4 && x.size(0) == B && x.size(1) == config.image_channels &&
                     x.size(2) == r && x.size(3) == r,
                 "Discriminator: pyramid[{}] must be [{}, {}, {}, {}], got {}", k, B, config.image_channels, r, r,
                 x.defined() ? x.sizes().str() : std::string("undefined"));
    ENGINE_CHECK(x.dtype() == pyramid[0].dtype(), "Discriminator: pyramid[{}] is {}, pyramid[0] is {}", k,
                 dtype_name(x.dtype()), dtype_name(pyramid[0].dtype()));
  }
  ENGINE_CHECK(c.defined() && c.dim() == 2 && c.size(0) == B && c.size(1) == config.cond_dim,
               "Discriminator: expected the condition c [{}, {}], got {}", B, config.cond_dim,
               c.defined() ? c.sizes().str() : std::string("undefined"));

  std::vector<DiscPrediction> out;
  out.reserve(size_t(L * (L + 1) / 2));
  Tensor h;  // [(k+1)*B, C, r, r]: Note [paths batched along the batch dim]
  for (int64_t k = 0; k < L; ++k) {
    const nn::DiscLevel& level = *levels[size_t(k)];
    memory::ModuleScope level_scope("b" + std::to_string(level.entry_resolution));
    const Tensor entry = level.from_rgb(pyramid[size_t(k)]);
    h = h.defined() ? cat({h, entry}, 0) : entry;
    h = level.forward(h);
    memory::ModuleScope pred_scope("pred");
    const Tensor logits = predictors[size_t(k)]->forward(h, c);  // [(k+1)*B]
    for (int64_t i = 0; i <= k; ++i) {
      DiscPrediction p;
      p.entry = i;
      p.exit = k;
      p.entry_resolution = levels[size_t(i)]->entry_resolution;
      p.exit_resolution = level.exit_resolution;
      p.logits = k == 0 ? logits : narrow(logits, 0, i * B, B);
      out.push_back(std::move(p));
    }
  }
  std::stable_sort(out.begin(), out.end(), [](const DiscPrediction& a, const DiscPrediction& b) {
    return a.entry != b.entry ? a.entry < b.entry : a.exit < b.exit;
  });
  return out;
}

Tensor sum_of_predictions(const std::vector<DiscPrediction>& predictions) {
  ENGINE_CHECK(!predictions.empty(), "sum_of_predictions: no predictions");
  Tensor total;
  for (const DiscPrediction& p : predictions) {
    const Tensor s = sum(p.logits);
    total = total.defined() ? add(total, s) : s;
  }
  return total;
}

TensorList make_image_pyramid(const Tensor& x, int64_t levels) {
  ENGINE_CHECK(x.dim() == 4 && levels >= 1, "make_image_pyramid: expected x [B, C, R, R] and levels >= 1, got {}, {}",
               x.sizes().str(), levels);
  ENGINE_CHECK(x.size(2) == x.size(3) && x.size(2) >= (int64_t(4) << (levels - 1)),
               "make_image_pyramid: {} levels need a square image of at least {} px, got {}", levels,
               int64_t(4) << (levels - 1), x.sizes().str());
  // upfirdn2d with f = [1/2, 1/2] along both axes, down 2, no padding: the mean of each 2x2 block.
  const Tensor box = from_vector({0.5, 0.5}, {2}, opts(x.dtype(), x.device()));
  UpFirDnParams p;
  p.down_x = p.down_y = 2;
  TensorList out{x};
  for (int64_t k = 1; k < levels; ++k) out.push_back(upfirdn2d(out.back(), box, p));
  return out;
}

}  // namespace engine::aurora
