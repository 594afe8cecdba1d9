// bench_train_step.cpp: one whole Aurora training step, and generator inference, against PyTorch
// in the same run (bench/README.md "bench_train_step"; DESIGN.md section 13).
//
// --mode train (default): one step of aurora::Trainer (aurora/trainer.h) on a fixed synthetic
// batch at the full resolution: G_main (G forward + D forward on fakes, both captions, backward,
// AdamW, w_avg, EMA) + D_main (G forward without grad, D on reals and fakes, backward, AdamW) +
// D_r1 (R1 with its double backward, AdamW). The trainer's lazy-R1 scaling stays as configured
// (the penalty times r1_interval, D's lr and betas adjusted by interval / (interval + 1)), but the
// bench runs the R1 phase EVERY step: the trainer's step counter is reset to 0 before each step,
// so `step % r1_interval == 0` holds. A real run pays R1 once per r1_interval steps; this is the
// worst-case step. The PyTorch side (bench/torch_train_step.py) builds the same step from the
// parity references (tests/parity/ref_generator.py, ref_discriminator.py, ref_text_head.py) with
// torch.optim.AdamW and a lerp EMA, on our initial weights and the same ids, z and images.
//
// --mode infer: generator images/s of the sample path (text encoder + text head + mapping +
// synthesis, no grad, psi = 1) at the config's full resolution, and the MFU = achieved FLOP/s /
// peak FLOP/s, with the forward FLOPs counted from the parameter shapes (generator_flops below:
// GEMM and convolution multiply-adds x 2).
//
// Measures: median step time over --iters after --warmup steps; peak memory = the arena's
// high-water mark of bytes in use during one more step minus the bytes in use before it (the
// parameters, gradients, AdamW moments and EMA copy exist before the step, so the figure is the
// step's activations, saved tensors and temporaries), and the arena's reserved bytes.
// Output: one JSON line per side ({"bench": ..., "side": "ours"|"pytorch", ...}), a table, and
// BENCH lines (metric time_ms / peak_bytes / images_per_s) with ratio = ours / PyTorch.
//
//   bench_train_step [--mode train|infer] [--preset tiny32|paper64|FILE.json] [--batch B]
//                    [--iters N] [--warmup W] [--threads T] [--device cpu] [--precision f32|bf16]
//                    [--conv-algorithm im2col|cudnn] [--peak-tflops X] [--check|--tight-check] [--ours-only] [--flops-only] [--vocab FILE]
// Environment: BENCH_PYTHON = the interpreter of the PyTorch side (default /usr/bin/python3).
// --flops-only (infer): print the FLOP count of one image's forward without building weights.
// --check (infer): compares the mean and mean |x| of the images of both sides (bf16: loose).
// --check (train): compares the first step's g_loss, d_loss and r1 of both sides (a guard that
// they run the same computation; exit 2 on a mismatch); --tight-check holds r1 to 2e-3 too (for a
// config with d_lr = 0, where D's first update cannot amplify rounding; see run_train).
// --device cpu|cuda|cuda:N and --precision f32|tf32|bf16 go into the train config's `device` and
// `precision` keys (aurora/train_config.h; inference: the model is materialised on the device and
// runs under MatmulPrecisionScope); the PyTorch side uses the same device and, for bf16,
// torch.autocast(device_type, dtype=torch.bfloat16). tf32 has no PyTorch counterpart here.
// --conv-algorithm im2col|cudnn goes into train.conv_algorithm (inference: ConvAlgorithmScope):
// our CUDA convolutions as im2col + GEMM (default) or through cuDNN (tensor/conv_algorithm.h); the
// PyTorch side always uses its own (cuDNN on CUDA).
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "aurora/config.h"
#include "aurora/train_config.h"
#include "aurora/trainer.h"
#include "autograd/grad_mode.h"
#include "bench/bench_util.h"
#include "dist/comm.h"
#include "io/safetensors.h"
#include "nn/state_dict.h"
#include "tensor/memory/memory.h"
#include "tensor/conv_algorithm.h"
#include "tensor/ops.h"
#include "tensor/precision.h"
#if ENGINE_WITH_CUDA
#include "tensor/cuda/device.h"
#endif

extern "C" void openblas_set_num_threads(int);

using namespace engine;
using nlohmann::json;

namespace {

struct Options {
  std::string mode = "train", preset = "tiny32", device = "cpu", precision = "f32", vocab;
  std::string conv_algorithm = "im2col";
  int64_t batch = 4;
  int iters = 5, warmup = 2, threads = 2;
  double peak_tflops = 0;  // 0: looked up from the device (GPU) or unknown (CPU: MFU not reported)
  bool check = false, tight_check = false, ours_only = false, flops_only = false;
};

[[noreturn]] void usage(const char* msg) {
  std::fprintf(stderr,
               "bench_train_step: %s\nusage: bench_train_step [--mode train|infer] [--preset tiny32|paper64|FILE.json] "
               "[--batch B] [--iters N] [--warmup W] [--threads T] [--device cpu] [--precision f32|bf16] "
               "[--conv-algorithm im2col|cudnn] [--peak-tflops X] [--check|--tight-check] [--ours-only] [--flops-only] "
               "[--vocab FILE]\n",
               msg);
  std::exit(1);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) usage(("missing value after " + a).c_str());
      return argv[++i];
    };
    if (a == "--mode") o.mode = next();
    else if (a == "--preset") o.preset = next();
    else if (a == "--batch") o.batch = std::atoll(next().c_str());
    else if (a == "--iters") o.iters = std::atoi(next().c_str());
    else if (a == "--warmup") o.warmup = std::atoi(next().c_str());
    else if (a == "--threads") o.threads = std::atoi(next().c_str());
    else if (a == "--device") o.device = next();
    else if (a == "--precision") o.precision = next();
    else if (a == "--conv-algorithm") o.conv_algorithm = next();
    else if (a == "--peak-tflops") o.peak_tflops = std::atof(next().c_str());
    else if (a == "--vocab") o.vocab = next();
    else if (a == "--check") o.check = true;
    else if (a == "--tight-check") o.check = o.tight_check = true;
    else if (a == "--ours-only") o.ours_only = true;
    else if (a == "--flops-only") o.flops_only = o.ours_only = true;
    else usage(("unknown argument '" + a + "'").c_str());
  }
  if (o.mode != "train" && o.mode != "infer") usage(("unknown --mode '" + o.mode + "' (train, infer)").c_str());
  if (o.batch < 1 || o.iters < 1 || o.warmup < 0 || o.threads < 1) usage("--batch, --iters, --threads must be >= 1, --warmup >= 0");
  if (o.precision != "f32" && o.precision != "tf32" && o.precision != "bf16")
    usage(("unknown --precision '" + o.precision + "' (f32, tf32, bf16)").c_str());
  if (o.conv_algorithm != "im2col" && o.conv_algorithm != "cudnn")
    usage(("unknown --conv-algorithm '" + o.conv_algorithm + "' (im2col, cudnn)").c_str());
  if (o.conv_algorithm == "cudnn" && o.device.rfind("cuda", 0) != 0)
    usage("--conv-algorithm cudnn needs a CUDA --device (the CPU has one convolution)");
  return o;
}

std::string preset_path(const std::string& preset) {
  if (preset.find('/') != std::string::npos || preset.find(".json") != std::string::npos) return preset;
  return std::string(ENGINE_SOURCE_DIR) + "/configs/" + preset + ".json";
}

// The preset's short name (file name without .json) for case names and JSON lines.
std::string preset_name(const std::string& preset) {
  std::string n = preset.substr(preset.find_last_of('/') + 1);
  if (n.size() > 5 && n.compare(n.size() - 5, 5, ".json") == 0) n.resize(n.size() - 5);
  return n;
}

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Captions of the synthetic batch (fixed; the tokenizer turns them into CLIP ids).
std::vector<std::string> captions(int64_t B) {
  static const char* const words[] = {"a red square on white",     "a green circle",  "a smiling face with sunglasses",
                                      "a blue car in the rain",    "two yellow stars", "a black cat"};
  std::vector<std::string> c;
  for (int64_t i = 0; i < B; ++i) c.push_back(words[i % 6]);
  return c;
}

// The bench's device (train.device syntax: cpu, cuda, cuda:N; aurora/train_config.h). A CUDA
// device in a build without the CUDA backend, or one that does not exist, is a clear error.
Device bench_device(const std::string& name) {
  const aurora::DeviceSpec spec = aurora::parse_device_spec(name, "--device");
  if (!spec.cuda) return Device::cpu();
#if ENGINE_WITH_CUDA
  cuda::check_device(Device::cuda(spec.index), "bench_train_step --device");
  return Device::cuda(spec.index);
#else
  ENGINE_CHECK(false, "bench_train_step: --device {}: this build has no CUDA backend (configure with -DENGINE_CUDA=ON)",
               name);
  return Device::cpu();
#endif
}

// Wait for the device's queued work (a timer must not stop while kernels still run).
void sync(Device device) {
#if ENGINE_WITH_CUDA
  if (device.is_cuda()) cuda::synchronize(device);
#else
  (void)device;
#endif
}

MatmulPrecision precision_of(const std::string& p) {
  return p == "bf16" ? MatmulPrecision::bf16 : p == "tf32" ? MatmulPrecision::tf32 : MatmulPrecision::f32;
}

struct Measured {
  double median_ms = 0;
  int64_t peak_bytes = 0, reserved_bytes = 0;
};

// Time `fn` (warm-up, then the median of `iters`), then one more call for the arena peak above
// the bytes in use before it.
// On CUDA: synchronized before and after each timed call; the peak and reserved bytes are the
// device arena's.
Measured measure(const std::function<void()>& fn, int warmup, int iters, Device device) {
  for (int i = 0; i < warmup; ++i) fn();
  sync(device);
  std::vector<double> times;
  for (int i = 0; i < iters; ++i) {
    const double t0 = now_ms();
    fn();
    sync(device);
    times.push_back(now_ms() - t0);
  }
  const int64_t before = memory::stats(device).live;
  memory::reset_peak(device);
  fn();
  sync(device);
  Measured m;
  m.median_ms = median(times);
  m.peak_bytes = memory::stats(device).peak - before;
  m.reserved_bytes = memory::stats(device).reserved;
  return m;
}

// The interpreter of the PyTorch side: BENCH_PYTHON when set (a GPU machine's PyTorch 2.x),
// else the one CMake recorded (/usr/bin/python3, Debian's python3-torch 1.13 CPU).
std::string python() {
  const char* env = std::getenv("BENCH_PYTHON");
  return env && *env ? env : ENGINE_PYTHON;
}

json run_pytorch(const json& job) {
  const std::string cmd = python() + " " + ENGINE_SOURCE_DIR + "/bench/torch_train_step.py '" +
                          job.dump() + "'";
  const std::string out = bench::run_command(cmd, "bench_train_step");
  // The last non-empty line is the JSON result (torch may print warnings before it).
  size_t end = out.find_last_not_of("\n ");
  ENGINE_CHECK(end != std::string::npos, "bench_train_step: torch_train_step.py printed nothing");
  const size_t start = out.rfind('\n', end);
  return json::parse(out.substr(start == std::string::npos ? 0 : start + 1, end + 1 - (start == std::string::npos ? 0 : start + 1)));
}

// FLOPs of one forward of the sample path (text encoder, text head, mapping, synthesis) for ONE
// image, counted from the parameter shapes: every weight is a GEMM or convolution operand, so its
// multiply-adds are numel x (the positions it is applied at), and FLOPs = 2 x multiply-adds.
// Positions by where the weight sits (names as aurora/generator.h, nn/*.h):
//   text_encoder.*, text_head.*         77 tokens (text_projection: 1, the EOT state)
//   cross_attn.to_kv                    76 tokens (t_seq)
//   mapping.*, *.style, filter_weight   1 (per image)
//   synthesis.b<r>.* 2-D / 1x1 weights  r^2 pixels / tokens; MoE experts r^2 / E each (top-1
//                                       routing: each token runs one expert)
//   ModulatedConv2d [N, O, I, k, k]     O I k^2 x r^2, plus N O I k^2 for mixing the N kernels;
//                                       the upsampling conv1 of a stage's first block and its
//                                       1x1 skip run at the input's (r/2)^2 pixels
//   attention scores                    self: 2 x T^2 x inner (logits and values), T = r^2;
//                                       cross: 2 x T x 76 x inner; text blocks: 2 x 77^2 x width
// Not counted: elementwise work, norms, softmax, the FIR filters, the deformable-sampling
// interpolation of MTM, the Fourier features' sines. That undercounts by a few per cent at most
// (the GEMMs and convolutions dominate); both sides' MFU use the same count.
// Needs shapes only: works on an unmaterialised module (--flops-only counts paper64 on any machine).
double generator_flops(nn::Module& model) {
  double macs = 0;
  auto has = [](const std::string& n, const char* s) { return n.find(s) != std::string::npos; };
  const auto params = model.named_parameters();
  std::map<std::string, const nn::Parameter*> by_name;
  for (const auto& [name, p] : params) by_name[name] = p;
  for (const auto& [name, p] : params) {
    const std::vector<int64_t> shape(p->shape.begin(), p->shape.end());
    if (shape.size() < 2) continue;  // biases, norms, scales
    double numel = 1;
    for (int64_t d : shape) numel *= double(d);
    if (has(name, "text_encoder.") || has(name, "text_head.")) {
      if (has(name, "token_embedding") || has(name, "positional_embedding")) continue;  // gathers
      if (has(name, "text_projection")) {
        macs += numel;
        continue;
      }
      macs += numel * 77;
      if (has(name, "attn.to_qkv.weight")) macs += 2.0 * 77 * 77 * double(shape[1]);
      continue;
    }
    if (has(name, "mapping.") || has(name, ".style.") || has(name, "filter_weight")) {
      macs += numel;
      continue;
    }
    const size_t b = name.find("synthesis.b");
    if (b == std::string::npos) continue;
    const int64_t r = std::atoll(name.c_str() + b + std::strlen("synthesis.b"));
    const double px = double(r * r);
    const bool up_block = r > 4 && has(name, ".conv0.");
    if (shape.size() == 5) {  // ModulatedConv2d [N, O, I, k, k]
      const double one = numel / double(shape[0]);
      const bool up = up_block && has(name, ".conv1.weight");
      macs += one * (up ? px / 4 : px) + (shape[0] > 1 ? numel : 0.0);
    } else if (shape.size() == 4) {  // 1x1 convs: skip, proj_in, proj_out
      macs += numel * (up_block && has(name, "skip_connection") ? px / 4 : px);
    } else if (has(name, ".experts.")) {
      const size_t e = name.find(".experts.");
      const std::string moe = name.substr(0, e);
      const auto router = by_name.find(moe + ".router.weight");
      const double experts = router != by_name.end() ? double(router->second->shape[0]) : 1.0;
      macs += numel * px / experts;
    } else if (has(name, "cross_attn.to_kv")) {
      macs += numel * 76;
    } else {
      macs += numel * px;
      if (has(name, "self_attn.to_v.weight")) macs += 2.0 * px * px * double(shape[0]);
      if (has(name, "cross_attn.to_q.weight")) macs += 2.0 * px * 76 * double(shape[0]);
    }
  }
  return 2.0 * macs;
}

// DESIGN.md section 13; ref_name pytorch-cpu or pytorch-cuda.
void print_bench_line(const std::string& case_name, const char* metric, double ours, double ref, const std::string& device) {
  const std::string ref_name = device.rfind("cuda", 0) == 0 ? "pytorch-cuda" : "pytorch-cpu";
  std::printf("BENCH case=%s metric=%s ours=%.6g ref=%.6g ratio=%.4f ref_name=%s\n", case_name.c_str(), metric, ours, ref,
              ref > 0 ? ours / ref : 0.0, ref_name.c_str());
}

int run_train(const Options& o, const std::string& cfg_path, const aurora::AuroraConfig& config) {
  json train = config.train.is_null() ? json::object() : config.train;
  train["batch_size"] = o.batch;
  train["micro_batch"] = 0;
  train["text_encoder"] = "small";
  train["vocab"] = o.vocab;
  train["device"] = o.device;        // the trainer puts G, G_ema, D, AdamW state and z there
  train["precision"] = o.precision;  // the trainer runs each phase under MatmulPrecisionScope
  train["conv_algorithm"] = o.conv_algorithm;  // ... and ConvAlgorithmScope
  const aurora::TrainConfig tc = aurora::parse_train_config(train);
  const Device device = bench_device(o.device);
  auto comm = dist::make_local_comm();
  aurora::Trainer trainer(config, tc, *comm);
  const int64_t R = trainer.model_config().discriminator.image_size;

  // The fixed batch: images uniform in [-1, 1] (a fixed seed), fixed captions.
  Generator gen(7);
  io::Batch batch;
  batch.images = sub(mul(rand({o.batch, 3, R, R}, gen), 2.0), 1.0);
  batch.captions = captions(o.batch);
  for (int64_t i = 0; i < o.batch; ++i) batch.indices.push_back(uint64_t(i));

  // Every step at full resolution with R1: step counter and image count back to 0 (the z of
  // step 0 each time; no growing, no EMA ramp-up change).
  aurora::StepResult first;
  bool have_first = false;
  auto step = [&] {
    aurora::TrainState& s = trainer.mutable_state();
    s.step = 0;
    s.nimg = 0;
    s.stage = R;
    s.stage_start_nimg = 0;
    const aurora::StepResult r = trainer.step(batch);
    ENGINE_CHECK(r.r1_applied, "bench_train_step: the R1 phase did not run (r1_interval {}, r1_gamma {})",
                 tc.r1_interval, tc.r1_gamma);
    if (!have_first) {
      first = r;
      have_first = true;
    }
  };

  bench::TempFiles files("bench_train_step");
  json job;
  if (!o.ours_only) {
    // Written before the first step: the PyTorch side starts from the same weights.
    const std::string gw = files.add(".g.safetensors"), dw = files.add(".d.safetensors"), in = files.add(".in.safetensors");
    nn::save_state_dict(trainer.G(), gw);
    nn::save_state_dict(trainer.D(), dw);
    const uint64_t zs = tc.seed;
    io::NamedTensors inputs = {{"ids", trainer.tokenize(batch.captions)},
                               {"images", batch.images},
                               {"z_g", trainer.make_z(o.batch, zs, aurora::Trainer::kPurposeZ_G, 0).to(Device::cpu())},
                               {"z_d", trainer.make_z(o.batch, zs, aurora::Trainer::kPurposeZ_D, 0).to(Device::cpu())}};
    json buffers = json::array();
    for (const auto& [name, buf] : trainer.G().named_buffers()) buffers.push_back(name);
    io::save_safetensors(in, inputs, {{"buffers", buffers.dump()}});
    job = {{"mode", "train"},       {"config", cfg_path},    {"g_weights", gw},      {"d_weights", dw},
           {"inputs", in},          {"threads", o.threads},  {"iters", o.iters},     {"warmup", o.warmup},
           {"device", o.device},    {"precision", o.precision}, {"batch", o.batch},  {"train", train}};
  }

  const Measured ours = measure(step, o.warmup, o.iters, device);
  const json ours_line = {{"bench", "train_step"},      {"side", "ours"},          {"preset", preset_name(o.preset)},
                          {"device", o.device},         {"precision", o.precision}, {"batch", o.batch},
                          {"conv_algorithm", o.conv_algorithm},
                          {"threads", o.threads},       {"iters", o.iters},        {"warmup", o.warmup},
                          {"r1_every_step", true},      {"median_ms", ours.median_ms},
                          {"peak_bytes", ours.peak_bytes}, {"reserved_bytes", ours.reserved_bytes},
                          {"params_g", trainer.g_store().numel()}, {"params_d", trainer.d_store().numel()},
                          {"first_step", {{"g_loss", first.g_loss}, {"d_loss", first.d_loss}, {"r1", first.r1}}}};
  std::printf("%s\n", ours_line.dump().c_str());
  if (o.ours_only) return 0;

  const json ref = run_pytorch(job);
  std::printf("%s\n", ref.dump().c_str());
  const std::string case_name = "train_step_" + preset_name(o.preset);
  const double t_ref = ref["median_ms"].get<double>(), m_ref = ref["peak_bytes"].get<double>();
  std::printf("%-28s %12s %12s %8s %14s %14s %8s\n", "case", "ours ms", "torch ms", "ratio", "ours peak B",
              "torch peak B", "ratio");
  std::printf("%-28s %12.2f %12.2f %8.3f %14lld %14.0f %8.3f\n", case_name.c_str(), ours.median_ms, t_ref,
              ours.median_ms / t_ref, (long long)ours.peak_bytes, m_ref, m_ref > 0 ? double(ours.peak_bytes) / m_ref : 0.0);
  print_bench_line(case_name, "time_ms", ours.median_ms, t_ref, o.device);
  print_bench_line(case_name, "peak_bytes", double(ours.peak_bytes), m_ref, o.device);

  int rc = 0;
  if (o.check) {
    // g_loss: same weights, ids and z; d_loss: after G's first AdamW step; r1: after D's. The
    // first AdamW step moves every parameter by about +-lr (m / sqrt(v) = sign(g)), so a D
    // gradient that is zero up to rounding can move its parameter either way on the two sides:
    // r1 gets 2e-2 (with d_lr = 0 it agrees to 1e-6; tests/test_bench_train_step.cpp checks that).
    for (const char* k : {"g_loss", "d_loss", "r1"}) {
      const double a = ours_line["first_step"][k].get<double>(), b = ref["first_step"][k].get<double>();
      // bf16 GEMM inputs (8-bit mantissas) on both sides, rounded at different places: 5e-2.
      const double rtol = o.precision == "bf16" ? 5e-2 : std::strcmp(k, "r1") == 0 && !o.tight_check ? 2e-2 : 2e-3;
      const bool ok = std::abs(a - b) <= rtol * std::abs(b) + 1e-5;
      std::printf("check %s: ours=%.7g pytorch=%.7g %s\n", k, a, b, ok ? "ok" : "MISMATCH");
      if (!ok) rc = 2;
    }
  }
  return rc;
}

int run_infer(const Options& o, const std::string& cfg_path, const aurora::AuroraConfig& config) {
  const aurora::GeneratorConfig gcfg = aurora::parse_generator_config(config.generator);
  json train = config.train.is_null() ? json::object() : config.train;
  train["vocab"] = o.vocab;
  const aurora::TrainConfig tc = aurora::parse_train_config(train);
  const Device device = bench_device(o.device);
  ENGINE_CHECK(config.has_discriminator, "bench_train_step: {} has no discriminator section (its text_dim sizes the "
                                         "text encoder's pooled output)", cfg_path);
  aurora::TextToImage model(gcfg, tc.small_text_encoder, config.discriminator.text_dim);
  const double flops = generator_flops(model);
  if (o.flops_only) {
    const json line = {{"bench", "infer"}, {"preset", preset_name(o.preset)}, {"flops_per_image", flops},
                       {"params_g", model.num_parameters()}};
    std::printf("%s\n", line.dump().c_str());
    return 0;
  }
  nn::ParameterStore store;
  TensorOptions on_device;
  on_device.device = device;
  store.materialize(model, 5, on_device);

  // Synthetic CLIP ids: SOT, a few word ids, EOT (the largest id), zero padding to 77.
  std::vector<int64_t> ids_v(size_t(o.batch * 77), 0);
  for (int64_t b = 0; b < o.batch; ++b) {
    const int64_t n = 3 + b % 8;
    ids_v[size_t(b * 77)] = 49406;
    for (int64_t t = 1; t <= n; ++t) ids_v[size_t(b * 77 + t)] = 320 + (b * 131 + t * 17) % 40000;
    ids_v[size_t(b * 77 + n + 1)] = 49407;
  }
  const Tensor ids = from_vector_i64(ids_v, {o.batch, 77});
  Generator gen(9);
  const Tensor z_host = randn({o.batch, gcfg.z_dim}, gen), z = z_host.to(device), ids_dev = ids.to(device);
  Tensor last;
  auto fwd = [&] {
    autograd::NoGradGuard no_grad;
    MatmulPrecisionScope scope(precision_of(o.precision));
    ConvAlgorithmScope conv_scope(parse_conv_algorithm(o.conv_algorithm, "--conv-algorithm"));
    const aurora::TextToImage::Text text = model.encode(ids_dev);
    last = model.synthesize(text, z, 1.0);
    ENGINE_CHECK(last.size(0) == o.batch, "bench_train_step: sample returned {} images", last.size(0));
  };
  const Measured ours = measure(fwd, o.warmup, o.iters, device);
  const double ips = double(o.batch) / (ours.median_ms / 1e3);
  json ours_line = {{"bench", "infer"},        {"side", "ours"},          {"preset", preset_name(o.preset)},
                    {"device", o.device},      {"precision", o.precision}, {"batch", o.batch},
                    {"conv_algorithm", o.conv_algorithm},
                    {"threads", o.threads},    {"iters", o.iters},        {"median_ms", ours.median_ms},
                    {"images_per_s", ips},     {"flops_per_image", flops}, {"peak_bytes", ours.peak_bytes},
                    {"reserved_bytes", ours.reserved_bytes},
                    {"params_g", store.numel()}};
  if (o.peak_tflops > 0) ours_line["mfu"] = ips * flops / (o.peak_tflops * 1e12);
  // Summary of the images (for --check: both sides generate the same images).
  const Tensor host = last.to(Device::cpu()).to(DType::f32);
  ours_line["images"] = {{"mean", mean(host).item()}, {"abs_mean", mean(abs(host)).item()}};
  std::printf("%s\n", ours_line.dump().c_str());
  if (o.ours_only) return 0;

  bench::TempFiles files("bench_train_step");
  const std::string gw = files.add(".g.safetensors"), in = files.add(".in.safetensors");
  nn::save_state_dict(model, gw);
  io::save_safetensors(in, {{"ids", ids}, {"z", z_host}}, {});
  const json job = {{"mode", "infer"},   {"config", cfg_path},   {"g_weights", gw},   {"inputs", in},
                    {"threads", o.threads}, {"iters", o.iters},  {"warmup", o.warmup}, {"device", o.device},
                    {"precision", o.precision}, {"batch", o.batch}, {"train", train},  {"peak_tflops", o.peak_tflops},
                    {"flops_per_image", flops}};
  const json ref = run_pytorch(job);
  std::printf("%s\n", ref.dump().c_str());
  const std::string case_name = "infer_" + preset_name(o.preset);
  const double ips_ref = ref["images_per_s"].get<double>();
  std::printf("%-24s ours %.2f img/s, pytorch %.2f img/s, ratio (ours/pytorch, higher is better) %.3f; %.3g GFLOP/image\n",
              case_name.c_str(), ips, ips_ref, ips / ips_ref, flops / 1e9);
  print_bench_line(case_name, "images_per_s", ips, ips_ref, o.device);
  print_bench_line(case_name, "time_ms", ours.median_ms, ref["median_ms"].get<double>(), o.device);
  int rc = 0;
  if (o.check) {
    for (const char* k : {"mean", "abs_mean"}) {
      const double a = ours_line["images"][k].get<double>(), b = ref["images"][k].get<double>();
      const double rtol = o.precision == "bf16" ? 3e-2 : 2e-3;  // bf16 GEMM inputs: 8-bit mantissas
      const bool ok = std::abs(a - b) <= rtol * std::abs(b) + 1e-5;
      std::printf("check images %s: ours=%.7g pytorch=%.7g %s\n", k, a, b, ok ? "ok" : "MISMATCH");
      if (!ok) rc = 2;
    }
  }
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  Options o = parse(argc, argv);
  if (o.vocab.empty()) o.vocab = std::string(ENGINE_SOURCE_DIR) + "/../shared/data/clip/bpe_simple_vocab_16e6.txt.gz";
  omp_set_num_threads(o.threads);
  openblas_set_num_threads(o.threads);
  try {
    const std::string cfg_path = preset_path(o.preset);
    const aurora::AuroraConfig config = aurora::load_config(cfg_path);
    return o.mode == "train" ? run_train(o, cfg_path, config) : run_infer(o, cfg_path, config);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_train_step: error: %s\n", e.what());
    return 1;
  }
}
