// text_head.cpp: Aurora's learnable text head (docs/aurora-spec.md section 1, quirk 11.1). The
// math, both attention modes and the parameter names are in text_head.h.
#include "nn/text_head.h"

#include <string>

#include "tensor/memory/profiler.h"
#include "tensor/ops.h"

namespace engine::nn {

namespace {

const TextHeadConfig& checked(const TextHeadConfig& c) {
  ENGINE_CHECK(c.in_dim > 0 && c.width > 0 && c.heads > 0 && c.layers >= 0 && c.mlp_ratio > 0,
               "TextHead: in_dim ({}), width ({}), heads ({}), mlp_ratio ({}) must be positive and layers ({}) >= 0",
               c.in_dim, c.width, c.heads, c.mlp_ratio, c.layers);
  ENGINE_CHECK(c.width % c.heads == 0, "TextHead: width {} is not divisible into {} heads", c.width, c.heads);
  ENGINE_CHECK(c.lr_mul > 0 && c.eps > 0, "TextHead: lr_mul ({}) and eps ({}) must be positive", c.lr_mul, c.eps);
  return c;
}

// QuickGELU (CLIP's): x * sigmoid(1.702 x).
Tensor quick_gelu(const Tensor& x) { return mul(x, sigmoid(mul(x, 1.702))); }

}  // namespace

TextAttention::TextAttention(const TextHeadConfig& c)
    : Module("TextAttention"),
      config(checked(c)),
      to_qkv(register_module<EqualLinear>("to_qkv", c.width, 3 * c.width, true, 0.0, c.lr_mul)),
      to_out(register_module<EqualLinear>("to_out", c.width, c.width, true, 0.0, c.lr_mul)) {}

Tensor TextAttention::forward(const Tensor& h) const {
  memory::ModuleScope scope("attn");
  const int64_t B = h.size(0), L = h.size(1), W = config.width, H = config.heads;
  if (config.compat_official) {
    // Spec 11.1: the released attention is the per-token linear W_o (W_v h + b_v) + b_o. Only the
    // v third of W_qkv is multiplied (narrow is a view; its backward leaves zeros for q and k).
    const double g = to_qkv.weight_gain, lr = to_qkv.lr_mul;
    const Tensor wv = mul(narrow(to_qkv.weight.value, 0, 2 * W, W), g);
    const Tensor bv = mul(narrow(to_qkv.bias->value, 0, 2 * W, W), lr);
    return to_out.forward(linear(h, wv, bv));
  }
  const Tensor qkv = view(to_qkv.forward(h), {B, L, 3, H, W / H});  // [q | k | v], heads inside each
  return to_out.forward(l2_attention(select(qkv, 2, 0), select(qkv, 2, 1), select(qkv, 2, 2), config.eps));
}

TextMlp::TextMlp(int64_t width, int64_t hidden, double lr_mul)
    : Module("TextMlp"),
      c_fc(register_module<EqualLinear>("c_fc", width, hidden, true, 0.0, lr_mul)),
      c_proj(register_module<EqualLinear>("c_proj", hidden, width, true, 0.0, lr_mul)) {}

Tensor TextMlp::forward(const Tensor& h) const {
  memory::ModuleScope scope("mlp");
  return c_proj.forward(quick_gelu(c_fc.forward(h)));
}

TextBlock::TextBlock(const TextHeadConfig& c)
    : Module("TextBlock"),
      gain(c.gain),
      ln_1(register_module<LayerNorm>("ln_1", c.width)),
      attn(register_module<TextAttention>("attn", c)),
      ln_2(register_module<LayerNorm>("ln_2", c.width)),
      mlp(register_module<TextMlp>("mlp", c.width, c.width * c.mlp_ratio, c.lr_mul)) {}

Tensor TextBlock::forward(const Tensor& x) const {
  // The gain multiplies the residual sum (released ResidualAttentionBlock); skipped when it is 1.
  auto scaled = [this](const Tensor& t) { return gain == 1.0 ? t : mul(t, gain); };
  const Tensor h = scaled(add(x, attn.forward(ln_1.forward(x))));
  return scaled(add(h, mlp.forward(ln_2.forward(h))));
}

TextBlockList::TextBlockList(const TextHeadConfig& c) : Module("TextBlockList") {
  for (int64_t i = 0; i < c.layers; ++i) items.push_back(&register_module<TextBlock>(std::to_string(i), c));
}

TextTransformer::TextTransformer(const TextHeadConfig& c)
    : Module("TextTransformer"), res_blocks(register_module<TextBlockList>("res_blocks", c)) {}

Tensor TextTransformer::forward(const Tensor& x) const {
  Tensor h = x;
  for (size_t i = 0; i < res_blocks.items.size(); ++i) {
    memory::ModuleScope scope("res_blocks." + std::to_string(i));
    h = res_blocks.items[i]->forward(h);
  }
  return h;
}

TextHead::TextHead(const TextHeadConfig& c)
    : Module("TextHead"),
      config(checked(c)),
      // Spec 1.2.1 / 11.5: bias initialised to 1.0; lr_mul 0.01 like the rest of the head.
      align_dim(c.in_dim != c.width ? &register_module<EqualLinear>("align_dim", c.in_dim, c.width, true, 1.0, c.lr_mul)
                                    : nullptr),
      transformer(register_module<TextTransformer>("transformer", c)) {}

TextHeadOutput TextHead::forward(const Tensor& tokens, const Tensor& eot_index) const {
  memory::ModuleScope scope("text_head");
  ENGINE_CHECK(tokens.defined() && tokens.dim() == 3 && tokens.size(2) == config.in_dim,
               "TextHead: expected tokens [B, L, {}], got {}", config.in_dim,
               tokens.defined() ? tokens.sizes().str() : std::string("undefined"));
  const int64_t B = tokens.size(0), L = tokens.size(1), W = config.width;
  ENGINE_CHECK(L >= 2, "TextHead: need at least 2 tokens (EOT and one more), got {}", L);
  ENGINE_CHECK(eot_index.defined() && eot_index.dim() == 1 && eot_index.size(0) == B &&
                   (eot_index.dtype() == DType::i64 || eot_index.dtype() == DType::i32),
               "TextHead: expected eot_index i64 [{}], got {}", B,
               eot_index.defined() ? eot_index.sizes().str() + " " + std::string(dtype_name(eot_index.dtype()))
                                   : std::string("undefined"));

  const Tensor x = align_dim ? align_dim->forward(tokens) : tokens;
  const Tensor T = transformer.forward(x);  // [B, L, W]

  // The split (spec 1.2.3) as two row gathers of the flattened [B * L, W] output.
  // The EOT positions decide which rows are gathered (host control flow): B integers, usually
  // already on the host (nn::eot_indices of host ids); to_vector copies a device tensor once.
  const std::vector<double> eot = eot_index.to_vector();
  std::vector<int64_t> g_rows, seq_rows;
  g_rows.reserve(size_t(B));
  seq_rows.reserve(size_t(B * (L - 1)));
  for (int64_t b = 0; b < B; ++b) {
    const int64_t e = int64_t(eot[size_t(b)]);
    ENGINE_CHECK(e >= 0 && e < L, "TextHead: eot_index[{}] = {} is outside [0, {})", b, e, L);
    g_rows.push_back(b * L + e);
    for (int64_t t = 0; t < L; ++t)
      if (t != e) seq_rows.push_back(b * L + t);
  }
  const Tensor flat = reshape(T, {B * L, W});
  const TensorOptions io = opts(DType::i64, T.device());
  TextHeadOutput out;
  out.t_g = index_select(flat, 0, from_vector_i64(g_rows, {B}, io));
  out.t_seq = reshape(index_select(flat, 0, from_vector_i64(seq_rows, {B * (L - 1)}, io)), {B, L - 1, W});
  out.tokens = T;
  return out;
}

Tensor eot_indices(const Tensor& token_ids) {
  ENGINE_CHECK(token_ids.defined() && token_ids.dim() == 2 && token_ids.size(1) > 0,
               "eot_indices: expected token ids [B, L], got {}",
               token_ids.defined() ? token_ids.sizes().str() : std::string("undefined"));
  const int64_t B = token_ids.size(0), L = token_ids.size(1);
  const std::vector<double> ids = token_ids.to_vector();  // exact for ids < 2^53
  std::vector<int64_t> out(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) {
    int64_t arg = 0;
    for (int64_t t = 1; t < L; ++t)
      if (ids[size_t(b * L + t)] > ids[size_t(b * L + arg)]) arg = t;
    out[size_t(b)] = arg;
  }
  return from_vector_i64(out, {B}, opts(DType::i64));
}

}  // namespace engine::nn
