// generator.cpp: Aurora's generator (structure and math in aurora/generator.h; docs/aurora-spec.md
// sections 1, 2, 4, 5, 6).
#include "aurora/generator.h"

#include <algorithm>
#include <string>

#include "nn/moe.h"
#include "nn/mtm.h"
#include "tensor/memory/profiler.h"

namespace engine::aurora {

using nn::Module;

nn::TextHeadConfig text_head_config(const GeneratorConfig& c) {
  nn::TextHeadConfig t;
  t.in_dim = c.text_in_dim;
  t.width = c.text_width;
  t.heads = c.text_heads;
  t.layers = c.text_layers;
  t.mlp_ratio = c.text_mlp_ratio;
  t.lr_mul = c.text_lr_mul;
  t.compat_official = c.compat_official;  // spec 11.1 (config.h)
  return t;
}

nn::MappingConfig mapping_config(const GeneratorConfig& c) {
  nn::MappingConfig m;
  m.z_dim = c.z_dim;
  m.c_dim = c.text_width;  // t_g
  m.w_dim = c.w_dim;
  m.hidden = c.mapping_hidden;
  m.num_layers = c.mapping_layers;
  m.lr_mul = c.mapping_lr_mul;
  return m;
}

namespace {

// The FFN of every AttentionBlock of a stage: the sparse MoE (spec 6) or, with 0 experts, a dense
// GEGLU FFN (spec 5.3's expert as a plain FFN; for small configs).
nn::FfnFactory stage_ffn(const GeneratorConfig& g, const GeneratorStageConfig& s) {
  if (s.num_experts == 0) return nn::dense_geglu_ffn(g.expert_hidden);
  nn::MoEConfig mc;
  mc.hidden = g.expert_hidden;
  mc.num_experts = s.num_experts;
  mc.w_dim = g.w_dim;
  return [mc](Module& block, const nn::AttentionConfig& a) -> nn::FfnForward {
    nn::MoEConfig c = mc;
    c.channels = a.width;
    c.lr_mul = a.lr_mul;
    nn::MoE& m = block.register_module<nn::MoE>("moe", c);
    return [&m](const Tensor& h, const Tensor& w) {
      memory::ModuleScope scope("moe");
      nn::MoEOutput o = m.forward(h, w);
      return nn::FfnOutput{o.y, o.loss, o.expert_ids};
    };
  };
}

nn::ResConvConfig resconv_config(const GeneratorConfig& g, int64_t cin, int64_t cout, int64_t n, bool up) {
  nn::ResConvConfig r;
  r.in_channels = cin;
  r.out_channels = cout;
  r.w_dim = g.w_dim;
  r.num_kernels = n;
  r.upsample = up;
  r.residual_gain = g.residual_gain;
  return r;
}

Tensor add_loss(const Tensor& acc, const Tensor& l) {
  if (!l.defined()) return acc;
  return acc.defined() ? add(acc, l) : l;
}

}  // namespace

// ---- SynthesisStage ---------------------------------------------------------------------------

SynthesisStage::SynthesisStage(const GeneratorConfig& g, int64_t r)
    : Module("SynthesisStage"), resolution(r), channels(g.stage(r).channels) {
  const GeneratorStageConfig& s = g.stage(r);
  const int64_t c = s.channels;
  if (r == 4) {
    nn::FourierConfig fc;
    fc.w_dim = g.w_dim;
    fc.channels = c;
    fc.size = 4;
    fc.sampling_rate = g.fourier_sampling_rate;
    fc.bandwidth = g.fourier_bandwidth;
    input = &register_module<nn::FourierFeatures>("input", fc);
    nn::ModConvConfig mc;
    mc.in_channels = mc.out_channels = c;
    mc.kernel_size = 3;
    mc.w_dim = g.w_dim;
    mc.num_kernels = s.num_kernels;
    mc.activation = nn::Activation::lrelu;
    conv = &register_module<nn::ModulatedConv2d>("conv", mc);
    if (s.mtm) conv->attach_mtm<nn::MTM>(c, g.w_dim);
  }
  const int64_t cin0 = r == 4 ? c : g.stage(r / 2).channels;
  nn::ResidualAttnConfig ac;
  ac.channels = c;
  ac.depth = s.attn_depth;
  ac.groups = g.attn_groups;
  ac.gain = g.attn_gain;
  ac.attn.heads = g.attn_heads;
  ac.attn.head_dim = g.attn_head_dim;
  ac.attn.width = g.attn_heads * g.attn_head_dim;
  ac.attn.context_dim = g.text_width;
  ac.attn.w_dim = g.w_dim;
  const nn::FfnFactory ffn = stage_ffn(g, s);
  for (int64_t i = 0; i < std::max(s.conv_blocks, s.attn_modules); ++i) {
    if (i < s.conv_blocks) {
      const bool up = r > 4 && i == 0;
      nn::ResConv& b = register_module<nn::ResConv>("conv" + std::to_string(i),
                                                    resconv_config(g, i == 0 ? cin0 : c, c, s.num_kernels, up));
      if (s.mtm) b.conv2.attach_mtm<nn::MTM>(c, g.w_dim);  // spec 4: only conv2 (never upsampling)
      convs.push_back(&b);
      order.push_back(&b);
    }
    if (i < s.attn_modules) {
      nn::ResidualAttn& a = register_module<nn::ResidualAttn>("attn" + std::to_string(i), ac, ffn);
      attns.push_back(&a);
      order.push_back(&a);
    }
  }
  torgb = &register_module<nn::ToRGB>("torgb", c, g.w_dim, s.num_kernels, g.image_channels);
}

std::vector<int64_t> RouterLayer::tokens_per_expert(int64_t num_experts) const {
  std::vector<int64_t> counts(size_t(num_experts), 0);
  // Router statistics are host bookkeeping: bring the (small, i64 [B, T]) ids to the CPU; on a
  // GPU this is one synchronising device->host copy per layer and sample grid.
  const Tensor ids = contiguous(expert_ids.device().is_cpu() ? expert_ids : expert_ids.to(Device::cpu()));
  ENGINE_CHECK(ids.dtype() == DType::i64, "RouterLayer {}: expert_ids must be i64", name);
  const int64_t* p = ids.data<int64_t>();
  for (int64_t i = 0; i < ids.numel(); ++i) {
    ENGINE_CHECK(p[i] >= 0 && p[i] < num_experts, "RouterLayer {}: expert id {} outside [0, {})", name, p[i], num_experts);
    ++counts[size_t(p[i])];
  }
  return counts;
}

Tensor SynthesisStage::forward(const Tensor& x_in, const Tensor& w, const Tensor& t_seq, Tensor* moe_loss,
                               std::vector<RouterLayer>* routing) const {
  Tensor x = x_in;
  if (input) {
    x = input->forward(w);
    x = conv->forward(x, w);
  }
  ENGINE_CHECK(x.defined(), "SynthesisStage b{}: needs the previous stage's features", resolution);
  for (Module* m : order) {
    if (auto* rc = dynamic_cast<nn::ResConv*>(m)) {
      x = rc->forward(x, w);
    } else {
      auto* attn = static_cast<nn::ResidualAttn*>(m);
      const nn::ResidualAttnOutput o = attn->forward(x, w, t_seq);
      x = o.x;
      *moe_loss = add_loss(*moe_loss, o.loss);
      if (routing) {
        const size_t index = size_t(std::find(attns.begin(), attns.end(), attn) - attns.begin());
        for (size_t j = 0; j < o.expert_ids.size(); ++j)
          if (o.expert_ids[j].defined())
            routing->push_back({"b" + std::to_string(resolution) + ".attn" + std::to_string(index) + ".block" +
                                    std::to_string(j),
                                resolution, o.expert_ids[j]});
      }
    }
  }
  return x;
}

// ---- Synthesis --------------------------------------------------------------------------------

Synthesis::Synthesis(const GeneratorConfig& g) : Module("Synthesis"), config(g) {
  g.validate();
  for (int64_t r : g.resolutions())
    stages[r] = &register_module<SynthesisStage>("b" + std::to_string(r), g, r);
}

int64_t Synthesis::num_ws() const {
  int64_t n = 0;
  for (const auto& [r, st] : stages) n += (st->conv ? 1 : 0) + int64_t(st->order.size());
  return n;
}

Synthesis::Output Synthesis::forward(const Tensor& w, const Tensor& t_seq, int64_t max_res) const {
  if (max_res == 0) max_res = config.image_size;
  ENGINE_CHECK(stages.count(max_res), "Synthesis: max_resolution {} is not one of the stages 4 .. {}", max_res,
               config.image_size);
  ENGINE_CHECK(w.defined() && w.dim() == 2 && w.size(1) == config.w_dim, "Synthesis: expected w [B, {}], got {}",
               config.w_dim, w.defined() ? w.sizes().str() : std::string("undefined"));
  ENGINE_CHECK(t_seq.defined() && t_seq.dim() == 3 && t_seq.size(0) == w.size(0) && t_seq.size(2) == config.text_width,
               "Synthesis: expected t_seq [{}, L, {}], got {}", w.size(0), config.text_width,
               t_seq.defined() ? t_seq.sizes().str() : std::string("undefined"));
  memory::ModuleScope root("G"), self("synthesis");
  Output out;
  Tensor x, img;
  for (const auto& [r, st] : stages) {
    if (r > max_res) break;
    memory::ModuleScope scope("b" + std::to_string(r));
    x = st->forward(x, w, t_seq, &out.moe_loss, &out.routing);
    img = nn::skip_image_sum(st->torgb->forward(x, w), img);
    out.images[r] = img;
  }
  if (!out.moe_loss.defined()) out.moe_loss = zeros({}, TensorOptions{w.dtype(), w.device(), memory::Kind::activation});
  return out;
}

// ---- Generator --------------------------------------------------------------------------------

nn::TextHeadOutput GeneratorTextHead::forward(const Tensor& tokens, const Tensor& eot_index) const {
  memory::ModuleScope root("G");  // nn::TextHead::forward adds "text_head"
  return nn::TextHead::forward(tokens, eot_index);
}

Tensor GeneratorMapping::forward(const Tensor& z, const Tensor& t_g) const {
  memory::ModuleScope root("G"), self("mapping");
  return nn::MappingNetwork::forward(z, t_g);
}

Generator::Generator(const GeneratorConfig& g)
    : Module("Generator"),
      config((g.validate(), g)),  // validate first: a bad config is reported before any submodule is built
      text_head(register_module<GeneratorTextHead>("text_head", text_head_config(g))),
      mapping(register_module<GeneratorMapping>("mapping", mapping_config(g))),
      synthesis(register_module<Synthesis>("synthesis", g)) {}

Tensor Generator::text_w_avg(const Tensor& t_g, const Tensor& z_samples) const {
  ENGINE_CHECK(t_g.defined() && t_g.dim() == 2 && t_g.size(1) == config.text_width,
               "Generator::text_w_avg: expected t_g [B, {}], got {}", config.text_width,
               t_g.defined() ? t_g.sizes().str() : std::string("undefined"));
  ENGINE_CHECK(z_samples.defined() && z_samples.dim() == 3 && z_samples.size(0) >= 1 &&
                   z_samples.size(1) == t_g.size(0) && z_samples.size(2) == config.z_dim,
               "Generator::text_w_avg: expected z_samples [n >= 1, {}, {}], got {}", t_g.size(0), config.z_dim,
               z_samples.defined() ? z_samples.sizes().str() : std::string("undefined"));
  const int64_t n = z_samples.size(0), B = t_g.size(0);
  // One mapping call on the n*B stacked samples (row i*B + b: sample i of caption b), then the mean
  // over the n samples: w_c[b] = mean_i Mapping(z_i[b], t_g[b]).
  const Tensor tg = reshape(expand(unsqueeze(t_g, 0), {n, B, t_g.size(1)}), {n * B, t_g.size(1)});
  const Tensor w = mapping.forward(reshape(z_samples, {n * B, config.z_dim}), tg);
  return mean(reshape(w, {n, B, config.w_dim}), {0});
}

Tensor Generator::truncate(const Tensor& w, const Truncation& t) const {
  if (t.psi == 1.0) return w;
  // spec 7 / run_synthesize.py: w <- lerp(w_avg, w, psi), then w <- lerp(w_c, w, psi).
  Tensor out = mapping.truncate(w, t.psi);
  if (t.w_text_avg.defined()) {
    ENGINE_CHECK(t.w_text_avg.dim() == 2 && t.w_text_avg.size(1) == config.w_dim &&
                     (t.w_text_avg.size(0) == w.size(0) || t.w_text_avg.size(0) == 1),
                 "Generator::truncate: expected w_text_avg [{} or 1, {}], got {}", w.size(0), config.w_dim,
                 t.w_text_avg.sizes().str());
    const Tensor c = t.w_text_avg.to(w.dtype());
    out = add(c, mul(sub(out, c), t.psi));  // lerp(c, out, psi) = c + psi (out - c)
  }
  return out;
}

Generator::Output Generator::forward(const Tensor& z, const Tensor& clip_tokens, const Tensor& eot_index,
                                     int64_t max_res, const Truncation& trunc) const {
  // The parts open their module paths themselves (G.text_head, G.mapping, G.synthesis).
  Output out;
  const nn::TextHeadOutput t = text_head.forward(clip_tokens, eot_index);
  out.t_g = t.t_g;
  out.t_seq = t.t_seq;
  const Tensor w = mapping.forward(z, out.t_g);
  {
    memory::ModuleScope root("G"), scope("mapping");
    out.w = truncate(w, trunc);
  }
  Synthesis::Output s = synthesis.forward(out.w, out.t_seq, max_res);
  out.images = std::move(s.images);
  out.moe_loss = s.moe_loss;
  out.routing = std::move(s.routing);
  return out;
}

}  // namespace engine::aurora
