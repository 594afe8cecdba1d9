// trainer.cpp: the phases of one training step, progressive growing, sampling (see trainer.h).
#include "aurora/trainer.h"

#include <cmath>
#include <filesystem>
#include <limits>

#include <fmt/format.h>

#include "autograd/engine.h"
#include "io/image.h"
#include "autograd/grad_mode.h"
#include "nn/losses.h"
#include "nn/modconv.h"
#include "tensor/error.h"
#include "tensor/memory/memory.h"
#include "tensor/ops.h"

namespace engine::aurora {

namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Enables/disables requires_grad on every parameter of a store (so a phase that only updates G
// does not compute D's weight gradients, StyleGAN2's requires_grad toggling).
void set_requires_grad(nn::ParameterStore& store, bool on) {
  for (auto& [name, p] : store.parameters()) p->value.requires_grad_(on);
}

// Nearest-free upsampling of a stage image to a pyramid level above the stage: G's own skip
// upsampler applied `times` times.
Tensor upsample_times(Tensor x, int64_t times) {
  for (int64_t i = 0; i < times; ++i) x = nn::upsample2d(x);
  return x;
}

int64_t log2_exact(int64_t x) {
  int64_t n = 0;
  while ((int64_t(1) << n) < x) ++n;
  return n;
}

TensorList logits_of(const std::vector<DiscPrediction>& preds, int64_t start, int64_t length) {
  TensorList out;
  out.reserve(preds.size());
  for (const DiscPrediction& p : preds) out.push_back(narrow(p.logits, 0, start, length));
  return out;
}

TensorList concat_pyramids(const std::vector<const TensorList*>& pyramids) {
  TensorList out;
  for (size_t k = 0; k < pyramids[0]->size(); ++k) {
    TensorList level;
    for (const TensorList* p : pyramids) level.push_back((*p)[k]);
    out.push_back(cat(level, 0));
  }
  return out;
}

}  // namespace

// ---- TextToImage ------------------------------------------------------------------------------

TextToImage::TextToImage(const GeneratorConfig& g, const SmallTextEncoderConfig& t, int64_t embed_dim,
                         std::shared_ptr<const TextEncoder> frozen)
    : nn::Module("TextToImage"),
      small_text_encoder(frozen ? nullptr
                                : &register_module<SmallTextEncoder>("text_encoder", t, g.text_in_dim, embed_dim)),
      frozen_text(std::move(frozen)),
      text_encoder(frozen_text ? *frozen_text : static_cast<const TextEncoder&>(*small_text_encoder)),
      generator(register_module<Generator>("generator", g)) {
  ENGINE_CHECK(!frozen_text || frozen_text->width() == g.text_in_dim,
               "config: generator.text_in_dim {} differs from the text encoder's width {}", g.text_in_dim,
               frozen_text ? frozen_text->width() : 0);
}

TextToImage::Text TextToImage::encode(const Tensor& ids) const {
  Text out;
  if (frozen_text) {
    // Frozen: no graph is needed (nothing upstream of the states requires grad).
    autograd::NoGradGuard no_grad;
    out.features = frozen_text->encode(ids);
  } else {
    out.features = small_text_encoder->encode(ids);
  }
  out.head = generator.text_head.forward(out.features.states, out.features.eot);
  return out;
}

Tensor TextToImage::mapping_w(const Text& text, const Tensor& z, double psi, uint64_t truncation_seed,
                              int64_t loop_mapping) const {
  autograd::NoGradGuard no_grad;
  Tensor w = generator.mapping.forward(z, text.head.t_g);
  if (psi == 1.0) return w;
  // Text-conditional truncation (spec 7): the mean w of `loop_mapping` z's for each caption.
  const int64_t N = z.size(0), zd = z.size(1);
  engine::Generator gen(truncation_seed, 0);
  const Tensor zs = randn({loop_mapping * N, zd}, gen);
  // Row r*N + n uses caption n.
  TensorList tg_rep;
  for (int64_t r = 0; r < loop_mapping; ++r) tg_rep.push_back(text.head.t_g);
  const Tensor ws = generator.mapping.forward(zs, cat(tg_rep, 0));
  const Tensor w_c = mean(reshape(ws, {loop_mapping, N, ws.size(1)}), {0});
  w = generator.mapping.truncate(w, psi);
  return add(w_c, mul(sub(w, w_c), psi));
}

Tensor TextToImage::synthesize_w(const Text& text, const Tensor& w, int64_t resolution,
                                 std::vector<RouterLayer>* routing) const {
  autograd::NoGradGuard no_grad;
  const int64_t res = resolution > 0 ? resolution : generator.config.image_size;
  Synthesis::Output s = generator.synthesis.forward(w, text.head.t_seq, res);
  if (routing) *routing = std::move(s.routing);
  return s.images.at(res);
}

Tensor TextToImage::synthesize(const Text& text, const Tensor& z, double psi, int64_t resolution,
                               uint64_t truncation_seed, int64_t loop_mapping, std::vector<RouterLayer>* routing) const {
  return synthesize_w(text, mapping_w(text, z, psi, truncation_seed, loop_mapping), resolution, routing);
}

// ---- Stage rules ------------------------------------------------------------------------------

std::string KimgStageRule::describe() const { return fmt::format("every {} kimg", stage_kimg_); }

ReferenceFidRule::ReferenceFidRule(FidFn reference_fid, FidFn generator_fid, double check_kimg, double tolerance)
    : reference_fid_(std::move(reference_fid)),
      generator_fid_(std::move(generator_fid)),
      check_kimg_(check_kimg),
      tolerance_(tolerance) {
  ENGINE_CHECK(reference_fid_ && generator_fid_, "ReferenceFidRule: both FID callbacks are required");
  ENGINE_CHECK(check_kimg > 0 && tolerance >= 1.0, "ReferenceFidRule: check_kimg must be > 0 and tolerance >= 1, got {}, {}",
               check_kimg, tolerance);
}

bool ReferenceFidRule::should_grow(const TrainState& s) {
  if (last_check_nimg_ >= 0 && double(s.nimg - last_check_nimg_) < check_kimg_ * 1000.0) return false;
  last_check_nimg_ = s.nimg;
  auto it = reference_.find(s.stage);
  if (it == reference_.end()) it = reference_.emplace(s.stage, reference_fid_(s.stage)).first;
  return generator_fid_(s.stage) <= it->second * tolerance_;
}

// ---- Trainer ----------------------------------------------------------------------------------

Tensor display_grid(const Tensor& images, int64_t nrow, int64_t cell) {
  autograd::NoGradGuard no_grad;
  Tensor x = contiguous(images.detach().to(DType::f32));
  const int64_t N = x.size(0), C = x.size(1), r = x.size(2);
  const int64_t f = cell > r ? cell / r : 1;
  if (f > 1)  // nearest-neighbour enlargement: [N,C,r,1,r,1] -> [N,C,r,f,r,f]
    x = reshape(expand(reshape(x, {N, C, r, 1, r, 1}), {N, C, r, f, r, f}), {N, C, r * f, r * f});
  return io::make_grid(x, nrow, 2, 255);
}

std::string resolve_vocab_path(const std::string& path) {
  ENGINE_CHECK(!path.empty(), "config.train.vocab: empty; expected the path of bpe_simple_vocab_16e6.txt.gz");
  std::error_code ec;
  ENGINE_CHECK(std::filesystem::is_regular_file(path, ec),
               "CLIP vocabulary file '{}' not found (config key train.vocab; the OpenAI BPE vocabulary "
               "bpe_simple_vocab_16e6.txt.gz, relative to the working directory)",
               path);
  return path;
}

uint64_t Trainer::stream_seed(uint64_t seed, uint64_t purpose) { return splitmix64(seed ^ splitmix64(purpose + 0x51ED)); }

Trainer::Trainer(const AuroraConfig& model, const TrainConfig& train, dist::Comm& comm, std::unique_ptr<StageRule> rule)
    : model_(model), train_(train), comm_(comm) {
  ENGINE_CHECK(!model.generator.is_null(), "Trainer: the config has no generator section ({})", model.source);
  ENGINE_CHECK(model.has_discriminator, "Trainer: the config has no discriminator section ({})", model.source);
  gcfg_ = parse_generator_config(model.generator);
  const DiscriminatorConfig& dcfg = model.discriminator;
  setup_clip(dcfg);
  ENGINE_CHECK(gcfg_.image_size == dcfg.image_size,
               "config: generator.image_size {} differs from discriminator.image_size {}", gcfg_.image_size,
               dcfg.image_size);
  ENGINE_CHECK(gcfg_.image_channels == dcfg.image_channels,
               "config: generator.image_channels {} differs from discriminator.image_channels {}", gcfg_.image_channels,
               dcfg.image_channels);
  ENGINE_CHECK(train.batch_size % comm.size() == 0, "config.train.batch_size: {} is not divisible by the {} ranks",
               train.batch_size, comm.size());
  local_batch_ = train.batch_size / comm.size();
  ENGINE_CHECK(train.growing.start_resolution <= gcfg_.image_size || train.growing.rule == "none",
               "config.train.growing.start_resolution: {} is above image_size {}", train.growing.start_resolution,
               gcfg_.image_size);
  model_json_ = {{"generator", model.generator}, {"discriminator", dcfg.to_json()}, {"train", train.to_json()}};

  tokenizer_ = std::make_unique<io::ClipTokenizer>(resolve_vocab_path(train.vocab));

  const std::shared_ptr<const TextEncoder> frozen_text =
      train.text_encoder == "clip" ? std::shared_ptr<const TextEncoder>(clip_->text) : nullptr;
  G_ = std::make_unique<TextToImage>(gcfg_, train.small_text_encoder, dcfg.text_dim, frozen_text);
  G_ema_ = std::make_unique<TextToImage>(gcfg_, train.small_text_encoder, dcfg.text_dim, frozen_text);
  D_ = std::make_unique<Discriminator>(dcfg);
  g_store_.materialize(*G_, stream_seed(train.seed, 101));
  d_store_.materialize(*D_, stream_seed(train.seed, 102));
  g_ema_store_.materialize(*G_ema_, stream_seed(train.seed, 101));
  {
    autograd::NoGradGuard no_grad;
    copy_(g_ema_store_.flat_params(), g_store_.flat_params());
  }
  set_requires_grad(g_ema_store_, false);
  ema_ = std::make_unique<nn::Ema>(g_store_, g_ema_store_);
  ema_->copy_buffers(*G_, *G_ema_);

  nn::AdamWOptions go{train.g_lr, train.beta1, train.beta2, train.eps, train.g_weight_decay};
  // Lazy R1 (StyleGAN2): D also steps on the regulariser, so scale lr and betas by
  // interval / (interval + 1) to keep the effective update per step.
  const double ratio = train.r1_interval > 0 ? double(train.r1_interval) / double(train.r1_interval + 1) : 1.0;
  nn::AdamWOptions dopt{train.d_lr * ratio, std::pow(train.beta1, ratio), std::pow(train.beta2, ratio), train.eps,
                        train.d_weight_decay};
  const auto mult = train.lr_multipliers;
  g_opt_ = std::make_unique<nn::AdamW>(g_store_, go, [mult](const std::string& n) { return lr_multiplier(mult, "G." + n); });
  d_opt_ = std::make_unique<nn::AdamW>(d_store_, dopt, [mult](const std::string& n) { return lr_multiplier(mult, "D." + n); });

  g_dp_ = std::make_unique<dist::DataParallel>(comm_, g_store_, *G_);
  d_dp_ = std::make_unique<dist::DataParallel>(comm_, d_store_, *D_);
  g_dp_->broadcast_parameters();
  d_dp_->broadcast_parameters();

  state_.image_size = gcfg_.image_size;
  state_.stage = train.growing.rule == "none" ? gcfg_.image_size : train.growing.start_resolution;
  if (rule) {
    rule_ = std::move(rule);
  } else {
    ENGINE_CHECK(train.growing.rule != "fid",
                 "config.train.growing.rule: \"fid\" needs an FID provider (the evaluation module); use \"kimg\"");
    rule_ = std::make_unique<KimgStageRule>(train.growing.stage_kimg);
  }
}

Tensor Trainer::tokenize(const std::vector<std::string>& captions) const {
  const io::TokenBatch t = tokenizer_->tokenize(std::span<const std::string>(captions));
  std::vector<int64_t> ids(t.ids.begin(), t.ids.end());
  return from_vector_i64(ids, {t.rows, t.cols});
}

Tensor Trainer::make_z(int64_t n, uint64_t seed, uint64_t purpose, int64_t first_row) const {
  engine::Generator gen(stream_seed(seed, purpose), uint64_t(first_row) * uint64_t(gcfg_.z_dim));
  return randn({n, gcfg_.z_dim}, gen);
}

void Trainer::check_batch(const io::Batch& b) const {
  ENGINE_CHECK(b.images.defined() && b.images.dim() == 4 && b.images.size(0) == local_batch_ &&
                   b.images.size(1) == gcfg_.image_channels && b.images.size(2) == b.images.size(3),
               "Trainer::step: expected images [{}, {}, H, H] (this rank's rows of the global batch {}), got {}",
               local_batch_, gcfg_.image_channels, train_.batch_size,
               b.images.defined() ? b.images.sizes().str() : std::string("undefined"));
  const int64_t H = b.images.size(2);
  ENGINE_CHECK(H >= gcfg_.image_size && H % gcfg_.image_size == 0 &&
                   ((H / gcfg_.image_size) & (H / gcfg_.image_size - 1)) == 0,
               "Trainer::step: image side {} is not a power-of-two multiple of image_size {}", H, gcfg_.image_size);
  ENGINE_CHECK(int64_t(b.captions.size()) == local_batch_, "Trainer::step: {} captions for {} images", b.captions.size(),
               local_batch_);
}

TensorList Trainer::real_pyramid(const Tensor& images) const {
  autograd::NoGradGuard no_grad;
  const int64_t R = gcfg_.image_size, s = state_.stage;
  Tensor x = images.to(DType::f32);
  const int64_t extra = log2_exact(x.size(2) / R);  // loader side above image_size: box down first
  if (extra > 0) x = make_image_pyramid(x, extra + 1).back();
  TensorList pyr = make_image_pyramid(x, model_.discriminator.num_levels());  // R, R/2, ..., 4
  const int64_t k_stage = log2_exact(R / s);
  for (int64_t k = 0; k < k_stage; ++k) pyr[size_t(k)] = upsample_times(pyr[size_t(k_stage)], k_stage - k);
  return pyr;
}

TensorList Trainer::fake_pyramid(const std::map<int64_t, Tensor>& images) const {
  const int64_t R = gcfg_.image_size, s = state_.stage;
  TensorList pyr;
  for (int64_t r = R; r >= 4; r /= 2) pyr.push_back(r <= s ? images.at(r) : upsample_times(images.at(s), log2_exact(r / s)));
  return pyr;
}

Tensor Trainer::rolled_condition_input(const Tensor& t_D) const {
  // Roll by one over the global batch: gather every rank's rows, roll, keep ours.
  const Tensor all = comm_.allgather(contiguous(t_D));
  return contiguous(narrow(nn::roll_batch(all, 1), 0, int64_t(comm_.rank()) * local_batch_, local_batch_));
}

StepResult Trainer::step(const io::Batch& batch) {
  check_batch(batch);
  const int64_t B = local_batch_, GB = train_.batch_size;
  const int64_t first_row = state_.step * GB + int64_t(comm_.rank()) * B;
  const Tensor ids = tokenize(batch.captions);
  StepResult res;
  res.stage = state_.stage;
  const int64_t stage = state_.stage;

  // ---- G_main ----
  {
    memory::PhaseScope phase("G_main");
    g_store_.zero_grad();
    set_requires_grad(d_store_, false);
    Tensor w_for_avg;
    {
      const TextToImage::Text text = G_->encode(ids);
      const Tensor z = make_z(B, train_.seed, kPurposeZ_G, first_row);
      const Tensor w = G_->generator.mapping.forward(z, text.head.t_g);
      w_for_avg = w.detach();
      Synthesis::Output s = G_->generator.synthesis.forward(w, text.head.t_seq, stage);
      const Tensor t_D = text.features.pooled.detach();
      const Tensor c = D_->condition(t_D), c_hat = D_->condition(rolled_condition_input(t_D));
      const TensorList fake = fake_pyramid(s.images);
      const auto preds = D_->forward_with_condition(concat_pyramids({&fake, &fake}), cat({c, c_hat}, 0));
      const Tensor g_adv = nn::g_loss(logits_of(preds, 0, B));
      const Tensor g_match = nn::g_match_loss(logits_of(preds, B, B));
      Tensor loss = add(g_adv, mul(g_match, train_.match_weight));
      if (s.moe_loss.defined()) loss = add(loss, mul(s.moe_loss, train_.moe_loss_weight));
      const Tensor clip_term = clip_loss_term(s.images, text.features, ids, res);
      if (clip_term.defined()) loss = add(loss, clip_term);
      autograd::backward(loss);
      res.g_adv = g_adv.item();
      res.g_match = g_match.item();
      res.moe = s.moe_loss.defined() ? s.moe_loss.item() : 0.0;
      res.g_loss = loss.item();
    }
    set_requires_grad(d_store_, true);
    g_dp_->allreduce_gradients();
    g_opt_->step();
    G_->generator.mapping.update_w_avg(w_for_avg, train_.w_avg_decay);
    w_for_avg = Tensor();
    g_dp_->average_buffer(G_->generator.mapping.w_avg.value);
    // EMA with StyleGAN2-ADA's optional ramp-up of the half-life.
    double half_life = train_.ema_kimg * 1000.0;
    if (train_.ema_rampup > 0) half_life = std::min(half_life, double(state_.nimg + GB) * train_.ema_rampup);
    ema_->update(half_life > 0 ? nn::Ema::beta_for(double(GB), half_life) : 0.0);
    ema_->copy_buffers(*G_, *G_ema_);
    phase.close();
  }

  // ---- D_main ----
  {
    memory::PhaseScope phase("D_main");
    d_store_.zero_grad();
    TensorList fake;
    Tensor t_D;
    {
      autograd::NoGradGuard no_grad;
      const TextToImage::Text text = G_->encode(ids);
      const Tensor z = make_z(B, train_.seed, kPurposeZ_D, first_row);
      Synthesis::Output s = G_->generator.synthesis.forward(G_->generator.mapping.forward(z, text.head.t_g),
                                                            text.head.t_seq, stage);
      fake = fake_pyramid(s.images);
      t_D = text.features.pooled;
    }
    const TensorList real = real_pyramid(batch.images);
    const Tensor c = D_->condition(t_D), c_hat = D_->condition(rolled_condition_input(t_D));
    const auto preds =
        D_->forward_with_condition(concat_pyramids({&real, &fake, &real, &fake}), cat({c, c, c_hat, c_hat}, 0));
    const Tensor d_adv = nn::d_loss(logits_of(preds, 0, B), logits_of(preds, B, B));
    const Tensor d_match = nn::d_match_loss(logits_of(preds, 2 * B, B), logits_of(preds, 3 * B, B));
    const Tensor loss = add(d_adv, mul(d_match, train_.match_weight));
    autograd::backward(loss);
    res.d_real = nn::d_loss_real(logits_of(preds, 0, B)).item();
    res.d_fake = nn::d_loss_fake(logits_of(preds, B, B)).item();
    res.d_match = d_match.item();
    res.d_loss = loss.item();
    d_dp_->allreduce_gradients();
    d_opt_->step();
  }

  // ---- D_r1 (lazy) ----
  res.r1 = std::numeric_limits<double>::quiet_NaN();
  if (train_.r1_interval > 0 && train_.r1_gamma > 0 && state_.step % train_.r1_interval == 0) {
    memory::PhaseScope phase("D_r1");
    d_store_.zero_grad();
    TensorList real = real_pyramid(batch.images);
    for (Tensor& x : real) x = contiguous(x).detach().requires_grad_(true);
    Tensor t_D;
    {
      autograd::NoGradGuard no_grad;
      t_D = G_->text_encoder.encode(ids).pooled;
    }
    const auto preds = D_->forward(real, t_D);
    TensorList outs;
    for (const DiscPrediction& p : preds) outs.push_back(p.logits);
    const Tensor r1 = nn::r1_penalty(outs, real, train_.r1_gamma);
    autograd::backward(mul(r1, double(train_.r1_interval)));
    res.r1 = r1.item();
    res.r1_applied = true;
    d_dp_->allreduce_gradients();
    d_opt_->step();
  }

  // ---- bookkeeping, growing ----
  state_.step += 1;
  state_.nimg += GB;
  if (state_.stage < gcfg_.image_size && rule_->should_grow(state_)) {
    state_.stage *= 2;
    state_.stage_start_nimg = state_.nimg;
    res.grew = true;
  }
  return res;
}

Tensor Trainer::sample(const std::vector<std::string>& captions, const Tensor& z, double psi,
                       std::vector<RouterLayer>* routing) const {
  autograd::NoGradGuard no_grad;
  const TextToImage::Text text = G_ema_->encode(tokenize(captions));
  return G_ema_->synthesize(text, z, psi, state_.stage, stream_seed(train_.seed, kPurposeTruncation), 16, routing);
}

}  // namespace engine::aurora
