// trainer.cpp: the phases of one training step, progressive growing, sampling (see trainer.h).
#include "aurora/trainer.h"

#include <cmath>
#include <filesystem>
#include <limits>
#include <optional>

#include <fmt/format.h>

#include "autograd/engine.h"
#include "io/image.h"
#include "autograd/grad_mode.h"
#include "nn/losses.h"
#include "nn/modconv.h"
#include "tensor/error.h"
#include "tensor/memory/memory.h"
#include "tensor/ops.h"

#if ENGINE_WITH_CUDA
#include "tensor/cuda/device.h"
#endif
#include "tensor/conv_algorithm.h"
#include "tensor/precision.h"

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

// The GEMM precision of G's and D's forwards and backwards for one phase (train.precision;
// docs/training.md "Mixed precision"). f32 installs no scope at all, so the f32 path is exactly
// the code that ran before precision existed. The MoE router overrides it with its own f32 scope
// (nn/moe.cpp); the optimizer, EMA and w_avg run outside it. Under bf16, phases with a plain
// first-order backward (G_main, D_main) also save their activations as bf16 copies
// (Note [bf16 saved activations], autograd/node.h); D_r1 passes saved_bf16 = false: R1 is f32
// and its double backward needs saved tensors that carry their graph.
// It also installs train.conv_algorithm (tensor/conv_algorithm.h) for the phase: "im2col"
// installs nothing (the default), "cudnn" a ConvAlgorithmScope.
class PhasePrecision {
 public:
  PhasePrecision(const std::string& precision, const std::string& conv_algorithm, bool saved_bf16 = true) {
    if (precision == "bf16") {
      scope_.emplace(MatmulPrecision::bf16);
      if (saved_bf16) saved_.emplace(DType::bf16);
    } else if (precision == "tf32") {
      scope_.emplace(MatmulPrecision::tf32);
    }
    if (conv_algorithm == "cudnn") conv_scope_.emplace(ConvAlgorithm::cudnn);
  }

 private:
  std::optional<MatmulPrecisionScope> scope_;
  std::optional<SavedActivationScope> saved_;
  std::optional<ConvAlgorithmScope> conv_scope_;
};

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
  const Tensor zs = randn({loop_mapping * N, zd}, gen, opts(z.dtype(), z.device()));
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

// train.device as a Device, checked against this build and machine: a clear error at start
// rather than a failure inside the first op.
Device resolve_train_device(const TrainConfig& train, int ranks) {
  const DeviceSpec spec = parse_device_spec(train.device);
  if (!spec.cuda) return Device::cpu();
#if ENGINE_WITH_CUDA
  const int count = cuda::device_count();
  ENGINE_CHECK(count > 0,
               "config.train.device: \"{}\" but no CUDA device is available (no GPU or no driver); use "
               "--device cpu",
               train.device);
  ENGINE_CHECK(spec.index < count, "config.train.device: \"{}\" but this machine has {} CUDA device(s) (cuda:0 .. cuda:{})",
               train.device, count, count - 1);
  // dist::MpiComm moves host memory (Debian's OpenMPI is not CUDA-aware): data parallelism on
  // GPUs needs the NCCL communicator, which the trainer does not use yet.
  ENGINE_CHECK(ranks == 1,
               "config.train.device: \"{}\" with {} ranks: multi-rank training on CUDA needs the NCCL "
               "communicator (not wired yet); run one rank per GPU-less host, or one rank on the GPU",
               train.device, ranks);
  if (train.conv_algorithm == "cudnn") require_cudnn("config.train.conv_algorithm");
  return Device::cuda(spec.index);
#else
  (void)ranks;
  throw Error(fmt::format(
      "config.train.device: \"{}\" but this build has no CUDA backend (configure with -DENGINE_CUDA=ON, or "
      "use --device cpu)",
      train.device));
#endif
}

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
  micro_batch_ = train.micro_batch > 0 ? train.micro_batch : local_batch_;
  ENGINE_CHECK(local_batch_ % micro_batch_ == 0,
               "config.train.micro_batch: {} does not divide the local batch {} (batch_size {} over {} ranks)",
               train.micro_batch, local_batch_, train.batch_size, comm.size());
  ENGINE_CHECK(train.growing.start_resolution <= gcfg_.image_size || train.growing.rule == "none",
               "config.train.growing.start_resolution: {} is above image_size {}", train.growing.start_resolution,
               gcfg_.image_size);
  model_json_ = {{"generator", model.generator}, {"discriminator", dcfg.to_json()}, {"train", train.to_json()}};
  device_ = resolve_train_device(train, comm.size());
  ENGINE_CHECK(train.text_encoder != "clip" || device_.is_cpu(),
               "config.train.text_encoder: the frozen CLIP towers are loaded on the CPU; \"clip\" with device \"{}\" "
               "is not supported yet (use text_encoder \"small\" or --device cpu)",
               train.device);

  tokenizer_ = std::make_unique<io::ClipTokenizer>(resolve_vocab_path(train.vocab));

  const std::shared_ptr<const TextEncoder> frozen_text =
      train.text_encoder == "clip" ? std::shared_ptr<const TextEncoder>(clip_->text) : nullptr;
  G_ = std::make_unique<TextToImage>(gcfg_, train.small_text_encoder, dcfg.text_dim, frozen_text);
  G_ema_ = std::make_unique<TextToImage>(gcfg_, train.small_text_encoder, dcfg.text_dim, frozen_text);
  D_ = std::make_unique<Discriminator>(dcfg);
  // Everything trained lives on device_: flat parameters and gradients, buffers (w_avg), and so
  // the AdamW moments (allocated like the flat parameters) and the EMA.
  const TensorOptions on_device = opts(DType::f32, device_);
  g_store_.materialize(*G_, stream_seed(train.seed, 101), on_device);
  d_store_.materialize(*D_, stream_seed(train.seed, 102), on_device);
  g_ema_store_.materialize(*G_ema_, stream_seed(train.seed, 101), on_device);
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
  if (train.expert_parallel > 1) {
    ENGINE_CHECK(comm.size() % int(train.expert_parallel) == 0,
                 "config.train.expert_parallel: {} does not divide the {} ranks (e.g. --set train.expert_parallel=1)",
                 train.expert_parallel, comm.size());
    ep_ = std::make_unique<dist::ExpertParallel>(*G_, comm_, int(train.expert_parallel));
    ep_->register_with(*g_dp_);
  }
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
  // Drawn on the training device: the same Philox values as on the CPU (docs/cuda.md).
  return randn({n, gcfg_.z_dim}, gen, opts(DType::f32, device_));
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
  // Roll by one over the global batch: gather every rank's rows, roll, keep ours. (One rank:
  // the local rows are the global batch; no host collective, so t_D may stay on the GPU.)
  const Tensor all = comm_.size() > 1 ? comm_.allgather(contiguous(t_D)) : contiguous(t_D);
  return contiguous(narrow(nn::roll_batch(all, 1), 0, int64_t(comm_.rank()) * local_batch_, local_batch_));
}

void Trainer::set_deterministic_reduce(bool on) {
  g_dp_->set_deterministic(on);
  d_dp_->set_deterministic(on);
}

void Trainer::gather_experts() {
  if (!ep_) return;
  ep_->gather_experts(g_store_.flat_params());
  ep_->gather_experts(g_ema_store_.flat_params());
  ep_->gather_experts(g_opt_->exp_avg());
  ep_->gather_experts(g_opt_->exp_avg_sq());
}

void Trainer::check_consistency() {
  g_dp_->check_consistency();
  d_dp_->check_consistency();
}

Tensor Trainer::condition_text(const Tensor& ids) const {
  // t_D of the local batch, micro-batch by micro-batch (the same computations at every rank
  // count), no grad: D's condition never trains the text encoder.
  autograd::NoGradGuard no_grad;
  TensorList parts;
  for (int64_t m = 0; m < local_batch_ / micro_batch_; ++m)
    parts.push_back(G_->text_encoder.encode(narrow(ids, 0, m * micro_batch_, micro_batch_)).pooled);
  return parts.size() == 1 ? parts[0] : cat(parts, 0);
}

StepResult Trainer::step(const io::Batch& host_batch) {
  check_batch(host_batch);
  // The loader produces host tensors: the images go to the training device once per step (the
  // captions are strings; their token ids stay on the host, where the text encoder hashes them).
  io::Batch batch = host_batch;  // tensor handles and captions: a cheap copy
  batch.images = host_batch.images.device() == device_ ? host_batch.images : host_batch.images.to(device_);
  const int64_t B = local_batch_, GB = train_.batch_size, MB = micro_batch_, M = B / MB;
  const int64_t first_row = state_.step * GB + int64_t(comm_.rank()) * B;
  // Loss of one micro-batch (a mean over its rows) times 1/M: the rank's gradient is the mean
  // over its rows; DataParallel's division by the world size makes it the global mean.
  const double inv_m = 1.0 / double(M);
  auto rows = [MB](const Tensor& t, int64_t m) { return narrow(t, 0, m * MB, MB); };
  // Logged losses: the scalar tensors of a phase, read back together at its end with ONE
  // device->host copy (a .item() per loss would synchronise the GPU a dozen times a step; they
  // are activations, so they cannot outlive the phase), then accumulated in the order they were
  // produced, in double, times 1/M, as the per-loss reads did.
  std::vector<std::pair<double*, Tensor>> logged;
  auto log_loss = [&logged](double* field, const Tensor& value) { logged.emplace_back(field, value.detach()); };
  auto read_logged = [&logged, inv_m] {
    if (logged.empty()) return;
    autograd::NoGradGuard no_grad;
    TensorList flat;
    flat.reserve(logged.size());
    for (const auto& [field, value] : logged) flat.push_back(reshape(to_dtype(value, DType::f32), {1}));
    const std::vector<double> values = cat(flat, 0).to_vector();  // the synchronising copy
    for (size_t i = 0; i < logged.size(); ++i) *logged[i].first += values[i] * inv_m;
    logged.clear();
  };
  const Tensor ids = tokenize(batch.captions);
  StepResult res;
  res.stage = state_.stage;
  const int64_t stage = state_.stage;

  // ---- G_main ----
  {
    memory::PhaseScope phase("G_main");
    g_store_.zero_grad();
    set_requires_grad(d_store_, false);
    TensorList w_rows;
    {
      PhasePrecision precision(train_.precision, train_.conv_algorithm);
      const Tensor t_D = condition_text(ids), t_hat = rolled_condition_input(t_D);
      for (int64_t m = 0; m < M; ++m) {
        const TextToImage::Text text = G_->encode(rows(ids, m));
        const Tensor z = make_z(MB, train_.seed, kPurposeZ_G, first_row + m * MB);
        const Tensor w = G_->generator.mapping.forward(z, text.head.t_g);
        w_rows.push_back(w.detach());
        Synthesis::Output s = G_->generator.synthesis.forward(w, text.head.t_seq, stage);
        const Tensor c = D_->condition(rows(t_D, m)), c_hat = D_->condition(rows(t_hat, m));
        const TensorList fake = fake_pyramid(s.images);
        const auto preds = D_->forward_with_condition(concat_pyramids({&fake, &fake}), cat({c, c_hat}, 0));
        const Tensor g_adv = nn::g_loss(logits_of(preds, 0, MB));
        const Tensor g_match = nn::g_match_loss(logits_of(preds, MB, MB));
        Tensor loss = add(g_adv, mul(g_match, train_.match_weight));
        if (s.moe_loss.defined()) loss = add(loss, mul(s.moe_loss, train_.moe_loss_weight));
        // The CLIP term (only with CLIP weights). Its contrastive kind compares the images of
        // one micro-batch with each other's captions, so unlike the other terms it depends on
        // the micro-batch composition (docs/distributed.md).
        StepResult clip_res;
        const Tensor clip_term = clip_loss_term(s.images, text.features, rows(ids, m), clip_res);
        if (clip_term.defined()) {
          loss = add(loss, clip_term);
          res.clip += clip_res.clip * inv_m;
          res.clip_applied = true;
          for (const auto& [r, v] : clip_res.clip_levels) res.clip_levels[r] += v * inv_m;
        }
        autograd::backward(mul(loss, inv_m));
        g_dp_->end_micro_batch();
        log_loss(&res.g_adv, g_adv);
        log_loss(&res.g_match, g_match);
        if (s.moe_loss.defined()) log_loss(&res.moe, s.moe_loss);
        log_loss(&res.g_loss, loss);
      }
    }
    set_requires_grad(d_store_, true);
    g_dp_->allreduce_gradients();
    g_opt_->step();
    // w_avg from the mean w of the whole global batch (all-gathered in global sample order), so
    // every rank computes the same value at any rank count.
    {
      autograd::NoGradGuard no_grad;
      const Tensor w_local = w_rows.size() == 1 ? w_rows[0] : cat(w_rows, 0);
      G_->generator.mapping.update_w_avg(comm_.size() > 1 ? comm_.allgather(contiguous(w_local)) : w_local,
                                         train_.w_avg_decay);
      w_rows.clear();
    }
    read_logged();
    // EMA with StyleGAN2-ADA's optional ramp-up of the half-life.
    double half_life = train_.ema_kimg * 1000.0;
    if (train_.ema_rampup > 0) half_life = std::min(half_life, double(state_.nimg + GB) * train_.ema_rampup);
    ema_->update(half_life > 0 ? nn::Ema::beta_for(double(GB), half_life) : 0.0);
    ema_->copy_buffers(*G_, *G_ema_);
    phase.close();
  }

  // ---- D_main ----
  // t_D after G's update (the text encoder trains with G); R1 uses the same.
  const Tensor t_D = [&] {
    PhasePrecision precision(train_.precision, train_.conv_algorithm);
    return condition_text(ids);
  }();
  {
    memory::PhaseScope phase("D_main");
    d_store_.zero_grad();
    const Tensor t_hat = rolled_condition_input(t_D);
    for (int64_t m = 0; m < M; ++m) {
      PhasePrecision precision(train_.precision, train_.conv_algorithm);
      TensorList fake;
      {
        autograd::NoGradGuard no_grad;
        const TextToImage::Text text = G_->encode(rows(ids, m));
        const Tensor z = make_z(MB, train_.seed, kPurposeZ_D, first_row + m * MB);
        Synthesis::Output s = G_->generator.synthesis.forward(G_->generator.mapping.forward(z, text.head.t_g),
                                                              text.head.t_seq, stage);
        fake = fake_pyramid(s.images);
      }
      const TensorList real = real_pyramid(rows(batch.images, m));
      const Tensor c = D_->condition(rows(t_D, m)), c_hat = D_->condition(rows(t_hat, m));
      const auto preds =
          D_->forward_with_condition(concat_pyramids({&real, &fake, &real, &fake}), cat({c, c, c_hat, c_hat}, 0));
      const Tensor d_adv = nn::d_loss(logits_of(preds, 0, MB), logits_of(preds, MB, MB));
      const Tensor d_match = nn::d_match_loss(logits_of(preds, 2 * MB, MB), logits_of(preds, 3 * MB, MB));
      const Tensor loss = add(d_adv, mul(d_match, train_.match_weight));
      autograd::backward(mul(loss, inv_m));
      d_dp_->end_micro_batch();
      log_loss(&res.d_real, nn::d_loss_real(logits_of(preds, 0, MB)));
      log_loss(&res.d_fake, nn::d_loss_fake(logits_of(preds, MB, MB)));
      log_loss(&res.d_match, d_match);
      log_loss(&res.d_loss, loss);
    }
    d_dp_->allreduce_gradients();
    d_opt_->step();
    read_logged();
  }

  // ---- D_r1 (lazy) ----
  res.r1 = std::numeric_limits<double>::quiet_NaN();
  if (train_.r1_interval > 0 && train_.r1_gamma > 0 && state_.step % train_.r1_interval == 0) {
    memory::PhaseScope phase("D_r1");
    d_store_.zero_grad();
    res.r1 = 0;
    for (int64_t m = 0; m < M; ++m) {
      // D's GEMMs in the phase precision, both passes of the double backward; the penalty itself
      // (sum of squared input gradients, the mean, the scale) is elementwise f32 arithmetic.
      PhasePrecision precision(train_.precision, train_.conv_algorithm, /*saved_bf16=*/false);
      TensorList real = real_pyramid(rows(batch.images, m));
      for (Tensor& x : real) x = contiguous(x).detach().requires_grad_(true);
      const auto preds = D_->forward(real, rows(t_D, m));
      TensorList outs;
      for (const DiscPrediction& p : preds) outs.push_back(p.logits);
      const Tensor r1 = nn::r1_penalty(outs, real, train_.r1_gamma);
      // interval * inv_m: an integer times a power of two for power-of-two M, exact.
      autograd::backward(mul(r1, double(train_.r1_interval) * inv_m));
      d_dp_->end_micro_batch();
      log_loss(&res.r1, r1);
    }
    res.r1_applied = true;
    d_dp_->allreduce_gradients();
    d_opt_->step();
    read_logged();
  }

  // Logged losses: the mean over the ranks (every rank gets the same values).
  if (comm_.size() > 1) {
    // Every rank has the same r1_applied, clip_applied and CLIP levels (the same schedule).
    std::vector<double*> fields = {&res.g_loss, &res.g_adv, &res.g_match, &res.moe,
                                   &res.d_loss, &res.d_real, &res.d_fake, &res.d_match};
    if (res.r1_applied) fields.push_back(&res.r1);
    if (res.clip_applied) {
      fields.push_back(&res.clip);
      for (auto& [r, v] : res.clip_levels) fields.push_back(&v);
    }
    const size_t n = fields.size();
    std::vector<double> v;
    for (double* f : fields) v.push_back(*f);
    Tensor t = from_vector(v, {int64_t(n)}, TensorOptions{DType::f64});
    comm_.allreduce(t);
    const std::vector<double> sum = t.to_vector();
    for (size_t i = 0; i < n; ++i) *fields[i] = sum[i] / double(comm_.size());
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
  // Sampling runs in f32 on the training device; the images come back to the host (grids, PNGs).
  const Tensor zd = z.device() == device_ ? z : z.to(device_);
  const Tensor images =
      G_ema_->synthesize(text, zd, psi, state_.stage, stream_seed(train_.seed, kPurposeTruncation), 16, routing);
  return images.device().is_cpu() ? images : images.to(Device::cpu());
}

}  // namespace engine::aurora
