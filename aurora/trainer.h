// trainer.h: Aurora's GAN training loop (docs/aurora-spec.md sections 6, 8, 9; DESIGN.md sections
// 7, 10 and 11; user guide: docs/training.md).
//
// Networks and optimizers:
//   G      = TextToImage {text_encoder (aurora/small_text_encoder.h), generator (aurora/generator.h)}
//            one ParameterStore, one AdamW (the text encoder is trained with G); with
//            train.text_encoder = "clip" the frozen CLIP text tower (aurora/clip.h) replaces the
//            small encoder and only the generator is trained
//   D      = Discriminator (aurora/discriminator.h), its own store and AdamW
//   G_ema  = a second TextToImage whose flat parameters follow G by nn::Ema (half-life
//            ema_kimg thousand images); its buffers (w_avg) are copied from G
// One step = the phases of StyleGAN2 with lazy regularisation:
//   G_main  L_G = sum_ij softplus(-D_ij(G(z,c), c))                       non-saturating (spec 8b)
//               + match_weight * sum_ij softplus(D_ij(G(z,c), c_hat))     matching-aware, G side
//               + moe_loss_weight * moe_loss                              spec 6
//               + clip_loss_weight * sum_r w_r L_CLIP(img_r, c)           spec 8a (with CLIP weights)
//   D_main  L_D = sum_ij softplus(-D_ij(x, c)) + softplus(D_ij(G(z',c), c))
//               + match_weight * sum_ij softplus(D_ij(x, c_hat)) + softplus(D_ij(G(z',c), c_hat))
//   D_r1    every r1_interval steps (step % r1_interval == 0):
//           r1_interval * gamma/2 * mean_b |grad_{pyramid} sum_ij D_ij(x, c)|^2   (Note [R1 double backward])
// c_hat: the captions rolled by one over the GLOBAL batch (nn::roll_batch on the all-gathered
// t_D), so a sample's mismatched caption does not depend on the rank count. Each phase is
// backward, DataParallel::allreduce_gradients, AdamW step.
// Data parallel (docs/distributed.md): each rank runs its local batch in micro-batches of
// train.micro_batch rows; each micro-batch loss (a mean over its rows) is scaled by 1 / (micro-
// batches per rank) before backward, and DataParallel divides the rank sum by the world size, so
// the gradient is the mean over the global batch at any rank count. Everything a micro-batch
// computes depends on its own rows only (z and data keyed by global sample index, t_D of the
// captions computed per micro-batch), so with a fixed micro-batch size the per-micro-batch
// gradients are the same at every rank count, and deterministic mode sums them in one fixed tree. With lazy R1 the D optimizer's lr
// and betas are adjusted as in StyleGAN2 (ratio = interval / (interval + 1): lr * ratio,
// beta ** ratio), so the regulariser does not change D's effective step size. After G_main:
// w_avg <- lerp(mean w, w_avg, w_avg_decay) with the mean over the all-gathered global batch
// (identical on every rank, no averaging of per-rank w_avg), then the EMA.
// D sees t_D = the text encoder's pooled embedding, DETACHED: the text encoder learns only from
// G's losses through the generator's token input, so G cannot move D's condition to fool it.
//
// Expert parallelism (train.expert_parallel = R > 1; dist/expert_parallel.h): G's MoE layers run
// with their experts sharded over EP groups of R consecutive ranks (forward hooks installed by
// dist::ExpertParallel), expert gradients reduced over the expert-data-parallel group. G_ema has
// no hooks (it samples on one rank with every expert): its EMA is exact for the experts a rank
// owns, and gather_experts() makes every copy current before sampling and checkpoints.
//
// Device and precision (train.device, train.precision; docs/training.md "GPU training"): the
// stores, the AdamW moments, the EMA and every z draw live on one device; the loader's host
// batch is copied there once per step; the logged losses come back in one device->host copy per
// step. Under precision "bf16" each phase's forward and backward run in MatmulPrecisionScope(bf16)
// (GEMM/conv inputs bf16, f32 accumulation and outputs); the MoE router, the losses, norms,
// softmax, R1's gradient norm, AdamW, the EMA and w_avg stay f32. train.conv_algorithm "cudnn"
// runs each phase in ConvAlgorithmScope(cudnn) (tensor/conv_algorithm.h).
//
// Randomness (DESIGN.md section 10): z comes from the counter-based Philox stream keyed by
// (seed, purpose), at offset (step * global_batch + global sample index) * z_dim, so a sample's z
// depends on (seed, step, global index, purpose) only: not on the rank count, not on the order of
// calls. That makes a resumed run bit-exact: the state is (step, nimg, stage, optimizer moments
// and step counts, parameters, EMA, w_avg), all in the checkpoint (aurora/checkpoint.h).
//
// Progressive growing (spec 9): training starts at growing.start_resolution; G runs
// forward(max_resolution = stage). D is always the full-size MS-I/O discriminator; below full
// size every pyramid level above the stage holds the stage image upsampled with G's own skip
// upsampler (nn::upsample2d, FIR [1,3,3,1]), for reals and fakes alike: reals are box-downsampled
// to the stage (make_image_pyramid) and upsampled back. So D's inputs carry exactly the stage's
// information, and when G grows, img_2s = ToRGB_2s + Up2(img_s) starts from what D already saw
// (the released G has no fade-in; the skip sum makes the addition additive). The switch is a
// pluggable StageRule: KimgStageRule by default; ReferenceFidRule is the paper's rule (grow when
// the generator's FID at this resolution reaches the FID between two disjoint real sets), fed by
// two callbacks that the evaluation module provides.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "aurora/clip.h"
#include "aurora/config.h"
#include "aurora/discriminator.h"
#include "aurora/generator.h"
#include "aurora/small_text_encoder.h"
#include "aurora/train_config.h"
#include "dist/comm.h"
#include "dist/data_parallel.h"
#include "dist/expert_parallel.h"
#include "io/clip_tokenizer.h"
#include "io/dataset.h"
#include "nn/adamw.h"
#include "nn/ema.h"

namespace engine::aurora {

// The CLIP of a run (train.clip_weights; docs/clip.md "Wiring into the trainer"): the frozen
// towers, loaded once per process (rank-local; never in a ParameterStore, never broadcast, never
// checkpointed), shared by G and G_ema. The sizes come from the file's shapes (the heads, which a
// weights file does not record, from train.clip_text_heads / clip_vision_heads).
struct RunClip {
  std::string path;
  std::string hash;  // clip_file_hash(path): what a checkpoint records
  ClipConfig config;
  std::shared_ptr<ClipTextTower> text;
  std::shared_ptr<ClipVisionTower> vision;  // null when not requested (no CLIP loss)
  double logit_scale = 0;                   // the stored log value
  double logit_scale_exp() const;
};
// Reads `path` (an HF CLIP model.safetensors) once: the text tower, and the vision tower and
// logit_scale when `with_vision`. One-line errors naming the file (missing, unreadable, bad key).
std::shared_ptr<RunClip> load_run_clip(const std::string& path, int64_t text_heads, int64_t vision_heads,
                                       bool with_vision);
// The ClipConfig of a CLIP weights file, from its tensor shapes (layers counted, widths, MLP,
// vocab, context, patch, image size, embed dim); heads 0 = width / 64 (ViT-L/14's 12 and 16).
ClipConfig clip_config_from_file(const io::SafetensorsFile& file, int64_t text_heads, int64_t vision_heads);
// A 64-bit content hash of a file (FNV-1a over 8-byte words, hex): identifies the CLIP weights a
// run was trained with (not cryptographic; it guards against resuming with another file).
std::string clip_file_hash(const std::string& path);

// G: the text encoder and the generator, one module tree (names text_encoder.*, generator.*), so
// one ParameterStore and one optimizer cover both. With a frozen text encoder (the CLIP text
// tower, `frozen_text` non-null) the module tree holds the generator only: the tower is held by
// pointer, not registered, so no store materialises it, no optimizer sees it and checkpoints do
// not contain it; its features are computed under NoGradGuard.
class TextToImage : public nn::Module {
 public:
  TextToImage(const GeneratorConfig& generator_config, const SmallTextEncoderConfig& text_config, int64_t embed_dim,
              std::shared_ptr<const TextEncoder> frozen_text = nullptr);

  struct Text {
    TextFeatures features;   // encoder output (states, eot, pooled)
    nn::TextHeadOutput head; // generator's text head: t_g, t_seq
  };
  Text encode(const Tensor& ids) const;
  // Images at `resolution` (0 = full) from z [N, z_dim] with optional truncation (spec 7:
  // w <- lerp(w_avg, w, psi), then lerp(w_c, w, psi) with w_c the mean w of `loop_mapping`
  // z's drawn from `truncation_seed` for each caption). No grad.
  // `routing` (optional): every MoE layer's routing of this forward (aurora/generator.h).
  Tensor synthesize(const Text& text, const Tensor& z, double psi, int64_t resolution = 0, uint64_t truncation_seed = 0,
                    int64_t loop_mapping = 16, std::vector<RouterLayer>* routing = nullptr) const;
  // The w used by synthesize (for z/w interpolation).
  Tensor mapping_w(const Text& text, const Tensor& z, double psi, uint64_t truncation_seed = 0,
                   int64_t loop_mapping = 16) const;
  Tensor synthesize_w(const Text& text, const Tensor& w, int64_t resolution = 0,
                      std::vector<RouterLayer>* routing = nullptr) const;

  SmallTextEncoder* small_text_encoder = nullptr;  // registered as "text_encoder"; null when frozen
  std::shared_ptr<const TextEncoder> frozen_text;
  // The encoder in use: *small_text_encoder (trained with G) or *frozen_text.
  const TextEncoder& text_encoder;
  Generator& generator;
};

// Where training stands; what a StageRule sees.
struct TrainState {
  int64_t step = 0;              // completed steps
  int64_t nimg = 0;              // images seen (global)
  int64_t stage = 0;             // current resolution
  int64_t stage_start_nimg = 0;  // nimg when this stage began
  int64_t image_size = 0;        // target resolution
  double kimg() const { return double(nimg) / 1000.0; }
  double stage_kimg() const { return double(nimg - stage_start_nimg) / 1000.0; }
};

// When progressive growing moves to the next resolution (spec section 9).
class StageRule {
 public:
  virtual ~StageRule() = default;
  // Called after every step while state.stage < image_size; true = double the stage now.
  virtual bool should_grow(const TrainState& state) = 0;
  virtual std::string describe() const = 0;
};

// The default: grow after `stage_kimg` thousand images at a stage.
class KimgStageRule : public StageRule {
 public:
  explicit KimgStageRule(double stage_kimg) : stage_kimg_(stage_kimg) {}
  bool should_grow(const TrainState& s) override { return s.stage_kimg() >= stage_kimg_; }
  std::string describe() const override;

 private:
  double stage_kimg_;
};

// The paper's rule: before a stage, compute the FID between two disjoint sets of real images at
// that resolution (the lower bound); every `check_kimg` thousand images, compute the generator's
// FID at that resolution; grow once it reaches the bound (times `tolerance`, >= 1). Both FIDs
// come from callbacks (the evaluation module: feature extractor, statistics), so the trainer
// does not depend on it. The reference value is cached per resolution.
class ReferenceFidRule : public StageRule {
 public:
  using FidFn = std::function<double(int64_t resolution)>;
  ReferenceFidRule(FidFn reference_fid, FidFn generator_fid, double check_kimg, double tolerance = 1.0);
  bool should_grow(const TrainState& s) override;
  std::string describe() const override { return "reference FID"; }
  const std::map<int64_t, double>& reference() const { return reference_; }

 private:
  FidFn reference_fid_, generator_fid_;
  double check_kimg_, tolerance_;
  std::map<int64_t, double> reference_;
  int64_t last_check_nimg_ = -1;
};

// Losses of one step: means over the GLOBAL batch (each rank's micro-batch means are averaged,
// then averaged over the ranks with one small allreduce), the same on every rank and at every
// rank count. r1 is NaN on steps without R1.
struct StepResult {
  double g_loss = 0, g_adv = 0, g_match = 0, moe = 0;
  double d_loss = 0, d_real = 0, d_fake = 0, d_match = 0;
  double r1 = 0;
  bool r1_applied = false;
  // Multi-level CLIP loss (weighted total, already in g_loss) and each level's unweighted term,
  // by resolution; clip_applied false when the loss is off (no CLIP weights, or weight 0).
  double clip = 0;
  bool clip_applied = false;
  std::map<int64_t, double> clip_levels;
  int64_t stage = 0;
  bool grew = false;  // the stage doubled after this step
};

// train.device as a Device, checked against this build and machine (CUDA backend, GPU present,
// index in range, one rank): a clear error at start rather than a failure inside the first op.
Device resolve_train_device(const TrainConfig& train, int ranks);

class Trainer {
 public:
  // `model` needs generator and discriminator sections; `comm` outlives the trainer. `rule`
  // null = from config (kimg, or none). Throws engine::Error on inconsistent sizes (text widths,
  // image sizes, batch not divisible by the ranks) and when the vocab file is missing.
  Trainer(const AuroraConfig& model, const TrainConfig& train, dist::Comm& comm, std::unique_ptr<StageRule> rule = nullptr);

  // One training step on this rank's rows of the global batch (batch.images [B_local, 3, H, H]
  // in [-1, 1] with H >= image_size a power-of-two multiple of it; batch.captions B_local).
  // The batch may live on the host (the loader's) or on device(); images are copied to device()
  // once per step.
  StepResult step(const io::Batch& batch);

  // CLIP ids of captions: i64 [N, 77].
  Tensor tokenize(const std::vector<std::string>& captions) const;
  // z [n, z_dim] from the Philox stream of (seed, purpose) at row `first_row`.
  Tensor make_z(int64_t n, uint64_t seed, uint64_t purpose, int64_t first_row) const;
  // G_ema images of captions with z rows [N, z_dim] at the current stage (grid previews).
  Tensor sample(const std::vector<std::string>& captions, const Tensor& z, double psi,
                std::vector<RouterLayer>* routing = nullptr) const;

  const TrainState& state() const { return state_; }
  TrainState& mutable_state() { return state_; }
  const TrainConfig& train_config() const { return train_; }
  const AuroraConfig& model_config() const { return model_; }
  const nlohmann::json& model_json() const { return model_json_; }
  void set_model_json(nlohmann::json j) { model_json_ = std::move(j); }
  // train.device resolved: where G, G_ema, D, the optimizer state and the z draws live.
  Device device() const { return device_; }
  int64_t local_batch() const { return local_batch_; }
  int64_t micro_batch() const { return micro_batch_; }
  // Data-parallel reduction in rank order (dist::DataParallel::set_deterministic): with the same
  // power-of-two micro_batch count at every rank count, the parameters are bit-identical for any
  // rank count. Also on with AURORA_DETERMINISTIC_REDUCE=1.
  void set_deterministic_reduce(bool on);
  // Collective: every rank's G and D parameters and buffers agree (G_ema follows G) (DataParallel::check_consistency);
  // an engine::Error naming the first differing parameter otherwise. save_checkpoint calls it.
  void check_consistency();
  // Collective; a no-op without expert parallelism. With train.expert_parallel > 1 each rank
  // updates only the experts it owns (in G, G's AdamW moments and G_ema); this broadcasts every
  // expert from its owner, so every rank holds the whole current model: call it on every rank
  // before sampling from G_ema or reading the experts (save_checkpoint calls it).
  void gather_experts();
  dist::Comm& comm() const { return comm_; }
  const StageRule& stage_rule() const { return *rule_; }
  // The run's CLIP (null without train.clip_weights, or when neither CLIP text nor the CLIP loss
  // is on).
  const RunClip* clip() const { return clip_.get(); }
  // Checkpoint metadata of the CLIP setup ("clip_weights", "clip_hash"; empty without CLIP), and
  // the resume check: a checkpoint trained with CLIP text / a CLIP file of another content than
  // this trainer's is a one-line error naming both.
  std::map<std::string, std::string> clip_checkpoint_metadata() const;
  void check_clip_checkpoint_metadata(const std::map<std::string, std::string>& metadata,
                                      const std::string& checkpoint_path) const;

  TextToImage& G() { return *G_; }
  TextToImage& G_ema() { return *G_ema_; }
  Discriminator& D() { return *D_; }
  nn::ParameterStore& g_store() { return g_store_; }
  nn::ParameterStore& g_ema_store() { return g_ema_store_; }
  nn::ParameterStore& d_store() { return d_store_; }
  nn::AdamW& g_opt() { return *g_opt_; }
  nn::AdamW& d_opt() { return *d_opt_; }

  // Purposes of the Philox streams.
  static constexpr uint64_t kPurposeZ_G = 1, kPurposeZ_D = 2, kPurposeSample = 3, kPurposeTruncation = 4;
  static uint64_t stream_seed(uint64_t seed, uint64_t purpose);

 private:
  TensorList real_pyramid(const Tensor& images) const;              // no grad
  TensorList fake_pyramid(const std::map<int64_t, Tensor>& images) const;
  Tensor rolled_condition_input(const Tensor& t_D) const;  // global roll by one, local rows
  Tensor condition_text(const Tensor& ids) const;           // t_D of the local batch, no grad
  void check_batch(const io::Batch& batch) const;
  void setup_clip(const DiscriminatorConfig& dcfg);
  // G_main's multi-level CLIP loss on G's images (undefined when off); fills res.clip*.
  Tensor clip_loss_term(const std::map<int64_t, Tensor>& images, const TextFeatures& text, const Tensor& ids,
                        StepResult& res) const;

  AuroraConfig model_;
  nlohmann::json model_json_;  // the whole config document (for checkpoints)
  TrainConfig train_;
  dist::Comm& comm_;
  Device device_ = Device::cpu();
  GeneratorConfig gcfg_;
  int64_t local_batch_ = 0, micro_batch_ = 0;
  std::unique_ptr<io::ClipTokenizer> tokenizer_;
  std::unique_ptr<TextToImage> G_, G_ema_;
  std::unique_ptr<Discriminator> D_;
  nn::ParameterStore g_store_, g_ema_store_, d_store_;
  std::unique_ptr<nn::AdamW> g_opt_, d_opt_;
  std::unique_ptr<nn::Ema> ema_;
  std::unique_ptr<dist::DataParallel> g_dp_, d_dp_;
  std::unique_ptr<dist::ExpertParallel> ep_;  // G's MoE layers, when train.expert_parallel > 1
  std::unique_ptr<StageRule> rule_;
  std::shared_ptr<RunClip> clip_;
  TrainState state_;
};

// Images f32 [N, C, r, r] in [-1, 1] as a u8 grid [Hg, Wg, C] for a PNG: each image is first
// enlarged by pixel repetition to `cell` pixels (when cell > r), so a 4 or 16 px sample stays
// visible; `nrow` images per row (io::make_grid's geometry).
Tensor display_grid(const Tensor& images, int64_t nrow, int64_t cell = 64);

// The vocabulary path resolved: as given when it exists, else relative to the source tree;
// throws engine::Error naming the path and the config key when it is missing.
std::string resolve_vocab_path(const std::string& path);

}  // namespace engine::aurora
