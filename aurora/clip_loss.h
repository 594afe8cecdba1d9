// clip_loss.h: CLIP preprocessing of generator images, the multi-level CLIP loss (docs/aurora-spec.md
// section 8a, loss group 3) and the CLIP score (docs/eval-data-formats.md section 2, torchmetrics).
//
// Preprocessing (Aurora's CLIPModel.clip_loss: bicubic resize to 224, no centre crop, CLIP
// mean/std, input in [0, 1]): a generator image in [-1, 1] is mapped to [0, 1] by x / 2 + 1/2
// (not clamped: a clamp would cut the gradient of saturated pixels), resized to S x S
// (S = the vision tower's image size), and normalised per channel with CLIP's
//   mean (0.48145466, 0.4578275, 0.40821073), std (0.26862954, 0.26130258, 0.27577711).
// The resize is Rh x Rw^T with precomputed interpolation matrices Rh [S, H], Rw [S, W]: two
// matmuls, so it is differentiable with existing ops to any order (R1 never needs it, but the
// trainer may compute G's loss under create_graph). Every row of R sums to 1, so the affine maps
// commute with it and the whole preprocessing is resize(x) * (0.5 / std) + (0.5 - mean) / std.
//
// Note [CLIP resize kernel]: the default is PyTorch's F.interpolate(mode="bicubic",
// align_corners=False, antialias=False), the call Aurora's clip_loss makes: Keys' cubic with
// A = -0.75, source coordinate (i + 0.5) in/out - 0.5, taps clamped at the border. Aurora trains
// at 4..64 px, so resizing to 224 is always an upsampling, where an anti-aliasing filter would
// do nothing useful, and matching the reference kernel keeps the loss identical to the paper's.
// antialias = true gives PyTorch's antialias=True kernels instead (PIL's: cubic A = -0.5, or the
// triangle, stretched by in/out when downsampling and normalised): use it for images larger than
// S (a 256 or 512 px generator), where the non-antialiased kernel skips pixels and aliases, and
// for the CLIP score, whose reference (HF CLIPImageProcessor) resizes with PIL's bicubic.
// Bilinear (triangle kernel, PyTorch's bilinear semantics) is available for both.
//
// The losses, per pyramid level r with image img_r [B, 3, r, r] and the text's pooled CLIP
// embedding t [B, E] (TextFeatures::pooled), f_i = image_embeds / ||.||, f_t = t / ||t||:
//   symmetric_contrastive (the default; the spec's Aurora clip_loss):
//       l = s f_i f_t^T [B, B], s = exp(logit_scale) (~100),  L_r = (CE(l, diag) + CE(l^T, diag)) / 2
//   image_to_text (GigaGAN's):  L_r = CE(l, diag)
//   cosine:                     L_r = -mean_b cos(f_i[b], f_t[b])
//   total = weight * sum_r level_weight_r * L_r
// The contrastive forms need B >= 2 distinct captions to carry a signal (with B = 1, l is 1 x 1
// and CE = 0) and treat a repeated caption in the batch as a negative. Aurora all-gathers both
// sides across GPUs before the CE; here the batch is the caller's (per rank).
//
// CLIP score (torchmetrics CLIPScore): 100 * cos(f_i[b], f_t[b]) per sample, returned as
// max(mean_b, 0). Its pipeline, as HF's CLIPImageProcessor does it on uint8 images: quantise the
// generator output as (x * 127.5 + 128) clamped to [0, 255] and truncated (StyleGAN's convention),
// bicubic antialiased resize to S, rounded back to uint8 (PIL resizes uint8 images), / 255, then
// CLIP mean/std. PIL's fixed-point bicubic can differ from this float kernel by one uint8 level in
// a few pixels; the score moves by far less than its sampling noise. Square images only (no crop
// needed: the shortest-side resize of a square image is the whole image).
#pragma once
#include <array>
#include <cstdint>
#include <vector>

#include "aurora/clip.h"

namespace engine::aurora {

enum class ResizeKernel { bilinear, bicubic };

// [out, in] f32 matrix R with y = R x resizing one axis from `in` to `out` samples, with PyTorch's
// F.interpolate(mode, align_corners=False, antialias) semantics (Note [CLIP resize kernel]).
Tensor resize_matrix(int64_t in, int64_t out, ResizeKernel kernel, bool antialias, TensorOptions options = {});
// x [.., H, W] -> [.., out_h, out_w] as matmul(matmul(Rh, x), Rw^T); differentiable to any order.
Tensor resize2d(const Tensor& x, int64_t out_h, int64_t out_w, ResizeKernel kernel = ResizeKernel::bicubic,
                bool antialias = false);

struct ClipPreprocess {
  ResizeKernel kernel = ResizeKernel::bicubic;
  bool antialias = false;  // Note [CLIP resize kernel]
  std::array<double, 3> mean{0.48145466, 0.4578275, 0.40821073};
  std::array<double, 3> std{0.26862954, 0.26130258, 0.27577711};
};

// Generator image [B, 3, H, W] in [-1, 1] -> CLIP pixels [B, 3, size, size].
Tensor clip_preprocess(const Tensor& image, int64_t size, const ClipPreprocess& pre = {});

// image [B, 3, H, W] in [-1, 1] -> image_embeds [B, E] (not normalised), differentiable w.r.t. image.
Tensor clip_image_embeds(const ClipVisionTower& vision, const Tensor& image, const ClipPreprocess& pre = {});

enum class ClipLossKind { symmetric_contrastive, image_to_text, cosine };

struct ClipLossConfig {
  ClipLossKind kind = ClipLossKind::symmetric_contrastive;
  double weight = 1.0;                // multiplies the sum over levels
  std::vector<double> level_weights;  // one per pyramid level passed; empty: 1 for every level
  ClipPreprocess preprocess;
};

struct ClipLossResult {
  Tensor loss;                // scalar: weight * sum_r level_weight_r * L_r (0 when every weight is 0)
  std::vector<Tensor> levels; // L_r per level (unweighted scalars, same graph); undefined where skipped
};

// images: the pyramid img_r, each [B, 3, r, r] in [-1, 1] (any sizes; the same B); text_embeds
// [B, E] (TextFeatures::pooled of the same captions; treated as a constant). logit_scale_exp:
// exp(logit_scale) of the checkpoint (ClipModel::logit_scale_exp(); unused by `cosine`). All
// levels go through the vision tower as one batch; a level whose weight is 0 is skipped.
// Memory: the ViT-L/14 graph saved for the backward is about 412 MiB per image per level (f32,
// measured), so B samples x n levels hold n B x 412 MiB until G's backward: pick the levels
// (level_weights) and the batch that the device can afford.
ClipLossResult multi_level_clip_loss(const ClipVisionTower& vision, const std::vector<Tensor>& images,
                                     const Tensor& text_embeds, const ClipLossConfig& config,
                                     double logit_scale_exp = 100.0);

struct ClipScoreOptions {
  bool quantize = true;  // uint8 round trips of the torchmetrics pipeline (see above)
  ClipPreprocess preprocess{ResizeKernel::bicubic, true};
};
struct ClipScoreResult {
  double score = 0;                // max(mean(per_sample), 0)
  std::vector<double> per_sample;  // 100 * cos
};
// No grad. images [B, 3, H, W] in [-1, 1] (H == W), text_embeds [B, E].
ClipScoreResult clip_score(const ClipVisionTower& vision, const Tensor& images, const Tensor& text_embeds,
                           const ClipScoreOptions& options = {});

// x / max(||x||_2, 1e-12) along the last dim (F.normalize).
Tensor l2_normalize(const Tensor& x);

}  // namespace engine::aurora
