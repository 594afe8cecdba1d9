// generator.h: Aurora's text-to-image generator (docs/aurora-spec.md sections 1, 2, 4, 5, 6; the
// released 64x64 configuration and its parameter counts in section 10).
//
//   (t_g, t_seq) = TextHead(clip_tokens, eot)                         spec 1 (nn/text_head.h)
//   w            = Mapping(z, t_g)                                    spec 1 (nn/mapping.h)
//   images, moe  = Synthesis(w, t_seq)                                spec 2
// w is broadcast to every synthesis module (repeat_w: all 23 wp rows of the released model hold the
// same w, so we pass w itself; per-layer mixing would need a [B, num_ws, w_dim] input).
//
// Synthesis, per resolution r (GeneratorStageConfig, one row of the table of spec section 2):
//   r = 4:   x = FourierFeatures(w)                       `b4.input`   (spec 2 "Input at 4x4")
//            x = ModConv3x3(x, w) (+ MTM when stage.mtm)  `b4.conv`    (lrelu, N = N_4)
//            x = ResConv_i(x, w), i < conv_blocks         `b4.conv{i}`
//   r >= 8:  [ResConv_i, ResidualAttn_i] interleaved       `b{r}.conv{i}`, `b{r}.attn{i}`
//            ResConv_0 upsamples (fused, spec 2 "Upsampling"); MTM on every conv2 when stage.mtm
//            (spec 4: r <= 16); ResidualAttn with depth attn_depth and, in each AttentionBlock, an
//            MoE of num_experts GEGLU experts (`...blockJ.moe`, spec 6) or a dense GEGLU FFN when 0
//   every r: y_r = ToRGB_r(x, w) (`b{r}.torgb`, 1x1, no demodulation, N = N_r);
//            img_r = y_r + Up2(img_{r/2})  (skip architecture, kept in fp32: nn/torgb.h)
//   moe_loss = sum of the 0.001 L_z + 0.001 L_aux of every MoE layer (spec 6).
// Truncation (spec 7): Generator::forward takes an optional Truncation (global w_avg and
// text-conditional average), applied to w between the mapping and the synthesis network.
// compat_official (config.h, spec 11.1; docs/official-checkpoint.md) selects the text head's
// released attention so that converted official weights (aurora/tools/convert_official.py)
// reproduce the released model.
// Progressive growing (spec 9): forward(.., max_resolution) stops after that resolution.
//
// Module paths (profiler tables): G.text_head.*, G.mapping.dense{i}, G.synthesis.b{r}.*.
// Parameter names: text_head.*, mapping.dense{i}.*, synthesis.b{r}.{input, conv, conv{i}, attn{i},
// torgb}.*, e.g. synthesis.b16.attn0.block1.moe.experts.3.w1.weight (the project convention of the
// model preamble). Registration order = forward order (flat-buffer locality).
// The module can be built in meta mode (no ParameterStore::materialize): num_parameters() of the
// paper64 preset is the spec's 1166.3 M (tests/test_generator.cpp).
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "aurora/config.h"
#include "nn/attention.h"
#include "nn/fourier.h"
#include "nn/mapping.h"
#include "nn/modconv.h"
#include "nn/module.h"
#include "nn/resconv.h"
#include "nn/text_head.h"
#include "nn/torgb.h"

namespace engine::aurora {

// One MoE layer's routing in a forward pass (spec 6): for logging (tokens per expert) and for the
// router picture of the paper's Fig. 6 (aurora/router_viz.h: router_map_from_ids(name,
// resolution, expert_ids, b)). Costs nothing: the ids are computed for the dispatch anyway.
struct RouterLayer {
  std::string name;        // module path under synthesis, e.g. "b16.attn0.block1"
  int64_t resolution = 0;  // tokens are the resolution x resolution pixels, token = y * r + x
  Tensor expert_ids;       // i64 [B, resolution^2]
  // Tokens routed to each of the layer's `num_experts` experts over the whole batch.
  std::vector<int64_t> tokens_per_expert(int64_t num_experts) const;
};

// One resolution of the synthesis network.
class SynthesisStage : public nn::Module {
 public:
  SynthesisStage(const GeneratorConfig& config, int64_t resolution);

  // x: the previous stage's features (undefined at r = 4); returns this stage's features and adds
  // the stage's MoE losses to *moe_loss (left undefined when there are none) and its MoE layers'
  // routing to *routing (when not null).
  Tensor forward(const Tensor& x, const Tensor& w, const Tensor& t_seq, Tensor* moe_loss,
                 std::vector<RouterLayer>* routing = nullptr) const;

  int64_t resolution, channels;
  nn::FourierFeatures* input = nullptr;   // r = 4 only
  nn::ModulatedConv2d* conv = nullptr;    // r = 4 only: the 3x3 conv after the input
  std::vector<nn::ResConv*> convs;        // conv{i}
  std::vector<nn::ResidualAttn*> attns;   // attn{i}
  std::vector<nn::Module*> order;         // forward order of convs and attns
  nn::ToRGB* torgb = nullptr;
};

class Synthesis : public nn::Module {
 public:
  explicit Synthesis(const GeneratorConfig& config);

  struct Output {
    std::map<int64_t, Tensor> images;  // img_r [B, image_channels, r, r] for every r <= max
    Tensor moe_loss;                    // scalar (zero when the network has no MoE layer)
    std::vector<RouterLayer> routing;   // every MoE layer run, in forward order
  };
  // w [B, w_dim], t_seq [B, L, text_width]; max_resolution 0 = image_size.
  Output forward(const Tensor& w, const Tensor& t_seq, int64_t max_resolution = 0) const;

  // Modules that take a w (the released wp rows): the 4x4 conv, every ResConv and ResidualAttn
  // (spec 2: 23 for the released model; ToRGB layers reuse their stage's last row).
  int64_t num_ws() const;

  GeneratorConfig config;
  std::map<int64_t, SynthesisStage*> stages;  // b{r}
};

// The truncation trick of the released inference (spec 7; run_synthesize.py):
//   w <- lerp(w_avg, w, psi)           global: mapping.w_avg, the training-time EMA of w
//   w <- lerp(w_text_avg, w, psi)      text-conditional, when w_text_avg is given (GigaGAN C.1)
// with lerp(a, b, psi) = a + psi (b - a). psi = 1 is the identity (no truncation). The released
// model repeats w over its 23 layers and truncates all of them, which is this on the single w.
struct Truncation {
  double psi = 1.0;
  Tensor w_text_avg;  // [B, w_dim] or [1, w_dim] (Generator::text_w_avg); undefined: global only
};

// The generator's text head and mapping network: the nn modules, with a forward that runs under
// G's module path root (memory::ModuleScope "G"; TextHead adds "text_head" itself, the mapping
// network gets "mapping"), as Synthesis::forward runs under "G.synthesis". Whoever calls them
// (Generator::forward, the trainer's phases, TextToImage, G_ema when sampling) then profiles G's
// work under "G.", as D's is under "D." (docs/memory.md). The forwards hide the base ones.
class GeneratorTextHead : public nn::TextHead {
 public:
  using nn::TextHead::TextHead;
  nn::TextHeadOutput forward(const Tensor& tokens, const Tensor& eot_index) const;
};

class GeneratorMapping : public nn::MappingNetwork {
 public:
  using nn::MappingNetwork::MappingNetwork;
  Tensor forward(const Tensor& z, const Tensor& t_g = Tensor()) const;
};

class Generator : public nn::Module {
 public:
  explicit Generator(const GeneratorConfig& config);

  struct Output {
    std::map<int64_t, Tensor> images;  // img_res_{r}x{r}
    Tensor moe_loss;
    std::vector<RouterLayer> routing;  // Synthesis::Output::routing
    Tensor w;      // [B, w_dim]
    Tensor t_g;    // [B, text_width]
    Tensor t_seq;  // [B, L - 1, text_width]
  };
  // z [B, z_dim]; clip_tokens [B, L, text_in_dim] (CLIP ln_final states); eot_index i64 [B].
  // Output::w is the (truncated) w the synthesis network received.
  Output forward(const Tensor& z, const Tensor& clip_tokens, const Tensor& eot_index,
                 int64_t max_resolution = 0, const Truncation& truncation = {}) const;

  // w_c[b] = mean_i Mapping(z_samples[i, b], t_g[b]): the text-conditional average of spec 7
  // (the released inference averages 16 samples: loop_mapping = 16). z_samples [n, B, z_dim],
  // t_g [B, text_width] (Output::t_g). Differentiable; call it under NoGradGuard for inference.
  Tensor text_w_avg(const Tensor& t_g, const Tensor& z_samples) const;
  // Apply `t` to w [B, w_dim] (see Truncation).
  Tensor truncate(const Tensor& w, const Truncation& t) const;

  GeneratorConfig config;
  GeneratorTextHead& text_head;
  GeneratorMapping& mapping;
  Synthesis& synthesis;
};

nn::TextHeadConfig text_head_config(const GeneratorConfig& c);
nn::MappingConfig mapping_config(const GeneratorConfig& c);

}  // namespace engine::aurora
