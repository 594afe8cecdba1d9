// clip_loss.cpp: CLIP preprocessing, the multi-level CLIP loss and the CLIP score (the math, the
// kernel choice and the conventions are in clip_loss.h, Note [CLIP resize kernel]).
#include "aurora/clip_loss.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "autograd/grad_mode.h"
#include "tensor/memory/profiler.h"
#include "tensor/ops.h"

namespace engine::aurora {

namespace {

// Keys' cubic convolution kernel with parameter A (PyTorch: A = -0.75 without antialias; PIL and
// PyTorch's antialiased path: A = -0.5).
double cubic(double x, double A) {
  x = std::fabs(x);
  if (x < 1) return ((A + 2) * x - (A + 3)) * x * x + 1;
  if (x < 2) return ((A * x - 5 * A) * x + 8 * A) * x - 4 * A;
  return 0;
}

double triangle(double x) { return std::max(0.0, 1 - std::fabs(x)); }

}  // namespace

Tensor resize_matrix(int64_t in, int64_t out, ResizeKernel kernel, bool antialias, TensorOptions options) {
  ENGINE_CHECK(in > 0 && out > 0, "resize_matrix: sizes must be positive, got in {} out {}", in, out);
  std::vector<double> R(size_t(out * in), 0.0);
  auto at = [&](int64_t i, int64_t j) -> double& { return R[size_t(i * in + j)]; };
  const double scale = double(in) / double(out);  // align_corners=False with an explicit size
  if (!antialias) {
    for (int64_t i = 0; i < out; ++i) {
      const double src = (double(i) + 0.5) * scale - 0.5;
      if (kernel == ResizeKernel::bilinear) {
        // PyTorch clamps the linear source coordinate at 0 (not the cubic one).
        const double s = std::max(src, 0.0);
        const int64_t i0 = int64_t(s), i1 = std::min(i0 + 1, in - 1);
        const double l1 = s - double(i0);
        at(i, i0) += 1 - l1;
        at(i, i1) += l1;
      } else {
        const int64_t i0 = int64_t(std::floor(src));
        const double t = src - double(i0);
        for (int64_t k = -1; k <= 2; ++k) {
          const int64_t j = std::clamp<int64_t>(i0 + k, 0, in - 1);  // border taps repeat the edge pixel
          at(i, j) += cubic(double(k) - t, -0.75);
        }
      }
    }
  } else {
    // PIL's / PyTorch's antialiased resampling: the kernel is stretched by `scale` when
    // downsampling (so every input pixel contributes), truncated to its support, and normalised.
    const double base = kernel == ResizeKernel::bicubic ? 2.0 : 1.0;  // half-width of the kernel
    const double support = scale >= 1 ? base * scale : base;
    const double inv = scale >= 1 ? 1.0 / scale : 1.0;
    for (int64_t i = 0; i < out; ++i) {
      const double center = scale * (double(i) + 0.5);
      const int64_t lo = std::max<int64_t>(int64_t(center - support + 0.5), 0);
      const int64_t hi = std::min<int64_t>(int64_t(center + support + 0.5), in);
      double total = 0;
      for (int64_t j = lo; j < hi; ++j) {
        const double x = (double(j) - center + 0.5) * inv;
        const double w = kernel == ResizeKernel::bicubic ? cubic(x, -0.5) : triangle(x);
        at(i, j) = w;
        total += w;
      }
      if (total != 0)
        for (int64_t j = lo; j < hi; ++j) at(i, j) /= total;
    }
  }
  return from_vector(R, {out, in}, options);
}

Tensor resize2d(const Tensor& x, int64_t out_h, int64_t out_w, ResizeKernel kernel, bool antialias) {
  ENGINE_CHECK(x.dim() >= 2, "resize2d: expected [.., H, W], got {}", x.sizes().str());
  const int64_t H = x.size(x.dim() - 2), W = x.size(x.dim() - 1);
  memory::ModuleScope scope("resize");
  const TensorOptions o = opts(x.dtype(), x.device());
  Tensor y = x;
  // Width first: [.., H, W] x [W, out_w] is one GEMM over all rows. An identity resize (same
  // size, no antialias: every kernel then interpolates at the samples themselves) is skipped.
  if (W != out_w || antialias) y = matmul(y, transpose(resize_matrix(W, out_w, kernel, antialias, o), 0, 1));
  if (H != out_h || antialias) y = matmul(resize_matrix(H, out_h, kernel, antialias, o), y);
  return y;
}

Tensor clip_preprocess(const Tensor& image, int64_t size, const ClipPreprocess& pre) {
  ENGINE_CHECK(image.dim() == 4 && image.size(1) == 3, "clip_preprocess: expected an image [B, 3, H, W], got {}",
               image.sizes().str());
  const Tensor r = resize2d(image, size, size, pre.kernel, pre.antialias);
  // (resize(x) / 2 + 1/2 - mean) / std: rows of R sum to 1, so [-1,1] -> [0,1] commutes with it.
  std::vector<double> a(3), b(3);
  for (int c = 0; c < 3; ++c) {
    ENGINE_CHECK(pre.std[size_t(c)] > 0, "clip_preprocess: std[{}] must be positive, got {}", c, pre.std[size_t(c)]);
    a[size_t(c)] = 0.5 / pre.std[size_t(c)];
    b[size_t(c)] = (0.5 - pre.mean[size_t(c)]) / pre.std[size_t(c)];
  }
  const TensorOptions o = opts(image.dtype(), image.device());
  return add(mul(r, from_vector(a, {1, 3, 1, 1}, o)), from_vector(b, {1, 3, 1, 1}, o));
}

Tensor clip_image_embeds(const ClipVisionTower& vision, const Tensor& image, const ClipPreprocess& pre) {
  return vision.forward(clip_preprocess(image, vision.config.vision.image, pre));
}

Tensor l2_normalize(const Tensor& x) {
  return div(x, clamp(sqrt(sum(square(x), {x.dim() - 1}, true)), 1e-12, std::nullopt));
}

ClipLossResult multi_level_clip_loss(const ClipVisionTower& vision, const std::vector<Tensor>& images,
                                     const Tensor& text_embeds, const ClipLossConfig& config,
                                     double logit_scale_exp) {
  ENGINE_CHECK(!images.empty(), "multi_level_clip_loss: no pyramid levels given");
  ENGINE_CHECK(config.level_weights.empty() || config.level_weights.size() == images.size(),
               "multi_level_clip_loss: {} level weights for {} levels", config.level_weights.size(), images.size());
  ENGINE_CHECK(text_embeds.dim() == 2 && text_embeds.size(1) == vision.config.embed_dim,
               "multi_level_clip_loss: text_embeds must be [B, {}], got {}", vision.config.embed_dim,
               text_embeds.sizes().str());
  const int64_t B = text_embeds.size(0);
  memory::ModuleScope scope("clip_loss");
  // Every level is resized to S, so all levels run through the tower as one batch [n * B, 3, S, S].
  // Levels whose weight is 0 are not run at all (each costs a ViT forward and backward per sample).
  auto level_weight = [&](size_t r) {
    return config.weight * (config.level_weights.empty() ? 1.0 : config.level_weights[r]);
  };
  TensorList pixels;
  std::vector<size_t> used;
  for (size_t r = 0; r < images.size(); ++r) {
    ENGINE_CHECK(images[r].dim() == 4 && images[r].size(0) == B,
                 "multi_level_clip_loss: level {} has shape {}, expected [{}, 3, H, W]", r, images[r].sizes().str(), B);
    if (level_weight(r) == 0) continue;
    pixels.push_back(clip_preprocess(images[r], vision.config.vision.image, config.preprocess));
    used.push_back(r);
  }
  ClipLossResult res;
  res.levels.resize(images.size());
  if (used.empty()) {
    res.loss = zeros({}, opts(text_embeds.dtype(), text_embeds.device()));
    return res;
  }
  const Tensor all = pixels.size() == 1 ? pixels[0] : cat(pixels, 0);
  const TensorList embeds = split(l2_normalize(vision.forward(all)), B, 0);
  const Tensor ft = l2_normalize(text_embeds.detach());
  const Tensor target = arange(B, opts(DType::i64, text_embeds.device()));

  for (size_t u = 0; u < used.size(); ++u) {
    const size_t r = used[u];
    const Tensor& fi = embeds[u];
    Tensor L;
    if (config.kind == ClipLossKind::cosine) {
      L = neg(mean(sum(mul(fi, ft), {1})));
    } else {
      const Tensor logits = mul(matmul(fi, transpose(ft, 0, 1)), logit_scale_exp);  // [B images, B texts]
      L = cross_entropy(logits, target);
      if (config.kind == ClipLossKind::symmetric_contrastive)
        L = mul(add(L, cross_entropy(transpose(logits, 0, 1), target)), 0.5);
    }
    res.levels[r] = L;
    const Tensor term = mul(L, level_weight(r));
    res.loss = res.loss.defined() ? add(res.loss, term) : term;
  }
  return res;
}

ClipScoreResult clip_score(const ClipVisionTower& vision, const Tensor& images, const Tensor& text_embeds,
                           const ClipScoreOptions& options) {
  ENGINE_CHECK(images.dim() == 4 && images.size(1) == 3 && images.size(2) == images.size(3),
               "clip_score: expected square images [B, 3, H, H], got {}", images.sizes().str());
  ENGINE_CHECK(text_embeds.dim() == 2 && text_embeds.size(0) == images.size(0) &&
                   text_embeds.size(1) == vision.config.embed_dim,
               "clip_score: text_embeds must be [{}, {}], got {}", images.size(0), vision.config.embed_dim,
               text_embeds.sizes().str());
  autograd::NoGradGuard no_grad;
  memory::ModuleScope scope("clip_score");
  const int64_t B = images.size(0), S = vision.config.vision.image;
  const TensorOptions o = opts(DType::f32, images.device());
  // The uint8 steps have no op (floor / round); they run on the host, which an evaluation can afford.
  auto requantize = [&](const Tensor& x, auto&& to_byte) {
    std::vector<double> v = x.to_vector();
    for (double& e : v) e = to_byte(e);
    return from_vector(v, x.sizes(), o);
  };
  Tensor x01;  // [B, 3, S, S] in [0, 1]
  if (options.quantize) {
    const Tensor u8 = requantize(images, [](double e) { return std::floor(std::clamp(e * 127.5 + 128, 0.0, 255.0)); });
    const Tensor r = resize2d(u8, S, S, options.preprocess.kernel, options.preprocess.antialias);
    x01 = div(requantize(r, [](double e) { return std::clamp(std::nearbyint(e), 0.0, 255.0); }), 255.0);
  } else {
    x01 = add(mul(resize2d(images.to(DType::f32), S, S, options.preprocess.kernel, options.preprocess.antialias), 0.5),
              0.5);
  }
  std::vector<double> inv_std(3), mean(3);
  for (size_t c = 0; c < 3; ++c) inv_std[c] = 1.0 / options.preprocess.std[c], mean[c] = options.preprocess.mean[c];
  const Tensor pixels = mul(sub(x01, from_vector(mean, {1, 3, 1, 1}, o)), from_vector(inv_std, {1, 3, 1, 1}, o));
  const Tensor cos = sum(mul(l2_normalize(vision.forward(pixels)), l2_normalize(text_embeds.to(DType::f32))), {1});
  ClipScoreResult res;
  double total = 0;
  for (double c : cos.to_vector()) {
    res.per_sample.push_back(100.0 * c);
    total += 100.0 * c;
  }
  res.score = std::max(total / double(B), 0.0);
  return res;
}

}  // namespace engine::aurora
