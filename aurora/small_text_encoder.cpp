// small_text_encoder.cpp: see small_text_encoder.h.
#include "aurora/small_text_encoder.h"

#include "tensor/error.h"
#include "tensor/memory/profiler.h"
#include "tensor/ops.h"

namespace engine::aurora {

namespace {

nn::TextHeadConfig block_config(const SmallTextEncoderConfig& c, int64_t width) {
  ENGINE_CHECK(width % c.heads == 0, "SmallTextEncoder: width {} is not divisible by heads {}", width, c.heads);
  nn::TextHeadConfig t;
  t.in_dim = width;
  t.width = width;
  t.heads = c.heads;
  t.layers = c.layers;
  t.mlp_ratio = c.mlp_ratio;
  t.lr_mul = c.lr_mul;
  t.gain = 1.0;
  t.compat_official = false;
  return t;
}

}  // namespace

SmallTextEncoder::SmallTextEncoder(const SmallTextEncoderConfig& c, int64_t width, int64_t embed_dim,
                                   int64_t context_length)
    : TextEncoder("SmallTextEncoder"),
      config(c),
      token_embedding(register_parameter("token_embedding", {c.vocab_size, width}, nn::Init::normal(1.0))),
      positional_embedding(register_parameter("positional_embedding", {context_length, width}, nn::Init::normal(0.1))),
      transformer(register_module<nn::TextTransformer>("transformer", block_config(c, width))),
      ln_final(register_module<nn::LayerNorm>("ln_final", width)),
      text_projection(register_module<nn::EqualLinear>("text_projection", width, embed_dim, false, 0.0, c.lr_mul)),
      width_(width),
      embed_dim_(embed_dim),
      context_length_(context_length) {
  ENGINE_CHECK(width > 0 && embed_dim > 0 && context_length > 0,
               "SmallTextEncoder: width, embed_dim and context_length must be positive, got {}, {}, {}", width,
               embed_dim, context_length);
}

TextFeatures SmallTextEncoder::encode(const Tensor& ids) const {
  ENGINE_CHECK(ids.defined() && ids.dim() == 2 && ids.dtype() == DType::i64 && ids.size(1) <= context_length_,
               "SmallTextEncoder: expected ids i64 [B, L] with L <= {}, got {}", context_length_,
               ids.defined() ? ids.sizes().str() : std::string("undefined"));
  // Trained with G (G's parameters, registered as G's "text_encoder"): profiled under G, for the
  // generator's text and for D's condition alike.
  memory::ModuleScope root("G"), scope("text_encoder");
  const int64_t B = ids.size(0), L = ids.size(1);
  // Hash the ids into the table on the host (a handful of integers per caption).
  const Tensor host = contiguous(ids.to(Device::cpu()));
  const int64_t* raw = host.data<int64_t>();
  std::vector<int64_t> rows(size_t(B * L));
  std::vector<int64_t> flat_eot(size_t(B), 0);
  for (int64_t i = 0; i < B * L; ++i) {
    ENGINE_CHECK(raw[i] >= 0, "SmallTextEncoder: negative token id {} at row {}, position {}", raw[i], i / L, i % L);
    rows[size_t(i)] = raw[i] % config.vocab_size;
  }
  TextFeatures out;
  out.eot = nn::eot_indices(host);
  const int64_t* eot = out.eot.data<int64_t>();
  for (int64_t b = 0; b < B; ++b) flat_eot[size_t(b)] = b * L + eot[b];

  // The index tensors built on the host go to the embedding's device (a small host->device copy
  // each); the ids themselves are host data (tokenised captions).
  const Device dev = token_embedding.value.device();
  const Tensor index = from_vector_i64(rows, {B * L}, opts(DType::i64, dev));
  Tensor x = reshape(index_select(token_embedding.value, 0, index), {B, L, width_});
  x = add(x, narrow(positional_embedding.value, 0, 0, L));
  x = transformer.forward(x);
  // Note [EOT carries the caption]: the blocks attend over all 77 positions, padding included
  // (no mask), so at initialisation the EOT state is dominated by the ~70 padding tokens and
  // says little more than the caption's length. Replace it by the mean of the caption's word
  // states (positions 1 .. eot-1): t_g, t_D and the pooled embedding then depend on every word
  // from the first step on. (CLIP gets the same effect from its causal mask and its training.)
  std::vector<double> pool(size_t(B * L), 0.0), is_eot(size_t(B * L), 0.0);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t = 1; t < eot[b]; ++t) pool[size_t(b * L + t)] = 1.0 / double(eot[b] - 1);
    is_eot[size_t(b * L + eot[b])] = 1.0;
  }
  const TensorOptions fo = opts(x.dtype(), dev);
  const Tensor words = bmm(from_vector(pool, {B, 1, L}, fo), x);  // [B, 1, width]
  const Tensor eot_mask = from_vector(is_eot, {B, L, 1}, fo);
  x = add(mul(x, rsub(1.0, eot_mask)), mul(eot_mask, words));
  out.states = ln_final.forward(x);
  const Tensor pooled_tokens = index_select(reshape(out.states, {B * L, width_}), 0, from_vector_i64(flat_eot, {B}, opts(DType::i64, dev)));
  out.pooled = text_projection.forward(pooled_tokens);
  return out;
}

}  // namespace engine::aurora
