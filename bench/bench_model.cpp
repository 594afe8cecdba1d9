// bench_model.cpp: the Aurora models of the `tiny32` preset (configs/tiny32.json) against their
// PyTorch references (bench_model_torch.py, which imports tests/parity/ref_*.py), both in one run,
// with the same thread count, after warm-up, median of several repetitions (bench/README.md):
//
//   g_fwd_bwd   one generator forward + backward: images = G(z, clip_tokens, eot);
//               L = sum_r <img_r, go_r> + moe_loss; backward to every parameter
//   d_r1        one discriminator R1 step (Note [R1 double backward], autograd/engine.h):
//               g = grad(sum_ij sum_b D_ij(pyramid, t_D), pyramid, create_graph);
//               r1 = sum_k sum(g_k^2) / B; backward(r1) to every parameter
//
// Both sides run the same network: our weights are written with nn::save_state_dict and loaded by
// the PyTorch side, and the inputs travel in a safetensors file. Parameter gradients live in
// buffers that exist before the step on both sides (our flat gradient buffer; PyTorch's .grad
// tensors made once and zeroed per repetition, as optimizer.zero_grad() does in 1.13), so peak
// memory counts the activations, saved tensors and temporaries of the step itself.
// Prints a table and per case and metric (DESIGN.md section 13):
//   BENCH case=NAME metric=time_ms ours=X ref=Y ratio=X/Y ref_name=pytorch-cpu
//   BENCH case=NAME metric=peak_bytes ours=X ref=Y ratio=X/Y ref_name=pytorch-cpu
//
//   bench_model [--threads 2] [--reps 5] [--batch 4] [--tokens 77] [--case all|g_fwd_bwd|d_r1]
//               [--check] [--ours-only] [--profile DIR]
// --ours-only skips the PyTorch side; --profile DIR also writes the per-op memory profiler's
// tables and trace of one more step to DIR/<case>; --check compares our loss value (r1, or L)
// with PyTorch's, a guard that both sides run the same computation.
#include <omp.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "aurora/config.h"
#include "aurora/discriminator.h"
#include "aurora/generator.h"
#include "autograd/engine.h"
#include "bench/bench_util.h"
#include "io/safetensors.h"
#include "nn/state_dict.h"
#include "tensor/memory/memory.h"
#include "tensor/memory/profiler.h"
#include "tensor/ops.h"

extern "C" void openblas_set_num_threads(int);

using namespace engine;

namespace {

// Give every constant-initialised parameter (biases, LayerNorm, MTM scales, zero-initialised
// output projections) a random value, so no branch of either network is trivially zero.
void perturb_constant_params(nn::ParameterStore& store, uint64_t seed) {
  autograd::NoGradGuard no_grad;
  Generator gen(seed);
  for (auto& [name, p] : store.parameters()) {
    if (p->init.kind != nn::Init::Kind::constant) continue;
    add_(p->value, mul(randn(p->shape, gen), 0.2));
  }
}

// Time `step` (bench::measure) and, with --profile DIR, run it once more under the per-op memory
// profiler (tensor/memory/profiler.h) and write its tables and trace to DIR/<name>.
bench::Result run_case(const std::string& name, const std::function<void()>& step, int reps, const std::string& profile_dir) {
  const bench::Result r = bench::measure(step, reps);
  if (!profile_dir.empty()) {
    memory::Profiler::reset();
    memory::Profiler::enable(true);
    step();
    memory::Profiler::enable(false);
    memory::Profiler::write_all(profile_dir + "/" + name);
    std::printf("%s: %s\n", name.c_str(), memory::Profiler::step_summary().c_str());
  }
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 2, reps = 5;
  int64_t batch = 4, text_tokens = 77;
  std::string which = "all";
  bool check = false, ours_only = false;
  std::string profile_dir;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--threads") && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--reps") && i + 1 < argc) reps = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--batch") && i + 1 < argc) batch = std::atoll(argv[++i]);
    else if (!std::strcmp(argv[i], "--tokens") && i + 1 < argc) text_tokens = std::atoll(argv[++i]);
    else if (!std::strcmp(argv[i], "--case") && i + 1 < argc) which = argv[++i];
    else if (!std::strcmp(argv[i], "--check")) check = true;
    else if (!std::strcmp(argv[i], "--ours-only")) ours_only = true;
    else if (!std::strcmp(argv[i], "--profile") && i + 1 < argc) profile_dir = argv[++i];
    else {
      std::fprintf(stderr,
                   "usage: bench_model [--threads N] [--reps N] [--batch B] [--tokens L] [--case all|g_fwd_bwd|d_r1] [--check] [--ours-only] [--profile DIR]\n");
      return 1;
    }
  }
  if (which != "all" && which != "g_fwd_bwd" && which != "d_r1") {
    std::fprintf(stderr, "bench_model: unknown --case '%s' (all, g_fwd_bwd, d_r1)\n", which.c_str());
    return 1;
  }
  omp_set_num_threads(threads);
  openblas_set_num_threads(threads);
  const aurora::AuroraConfig config = aurora::load_config(std::string(ENGINE_SOURCE_DIR) + "/configs/tiny32.json");

  bench::TempFiles files("bench_model");
  std::map<std::string, bench::Result> ours;
  std::map<std::string, double> our_loss;
  nlohmann::json job = {{"threads", threads}, {"reps", reps}, {"cases", nlohmann::json::object()}};
  Generator gen(0);

  if (which == "all" || which == "d_r1") {
    const aurora::DiscriminatorConfig& cfg = config.discriminator;
    aurora::Discriminator d(cfg);
    nn::ParameterStore store;
    store.materialize(d, 11);
    perturb_constant_params(store, 12);
    TensorList xs;
    io::NamedTensors inputs;
    for (int64_t r : cfg.entry_resolutions()) {
      xs.push_back(randn({batch, cfg.image_channels, r, r}, gen));
      inputs.emplace_back("x/" + std::to_string(xs.size() - 1), xs.back());
    }
    const Tensor t = randn({batch, cfg.text_dim}, gen);
    inputs.emplace_back("t", t);
    const std::string wpath = files.add(".d.weights.safetensors"), ipath = files.add(".d.inputs.safetensors");
    nn::save_state_dict(d, wpath);
    io::save_safetensors(ipath, inputs, {{"config", cfg.to_json().dump()}});
    job["cases"]["d_r1"] = {{"weights", wpath}, {"inputs", ipath}};

    double r1_value = 0;
    auto step = [&] {
      TensorList xr;
      for (const Tensor& x : xs) xr.push_back(x.detach().requires_grad_(true));
      const Tensor total = aurora::sum_of_predictions(d.forward(xr, t));
      const TensorList g = autograd::grad({total}, xr, {}, /*create_graph=*/true);
      Tensor r1;
      for (const Tensor& gk : g) {
        const Tensor s = sum(square(gk));
        r1 = r1.defined() ? add(r1, s) : s;
      }
      r1 = div(r1, double(batch));
      autograd::backward(r1);
      r1_value = r1.item();
      store.zero_grad();
    };
    ours["d_r1"] = run_case("d_r1", step, reps, profile_dir);
    our_loss["d_r1"] = r1_value;
  }

  if (which == "all" || which == "g_fwd_bwd") {
    const aurora::GeneratorConfig cfg = aurora::parse_generator_config(config.generator);
    aurora::Generator g(cfg);
    nn::ParameterStore store;
    store.materialize(g, 21);
    perturb_constant_params(store, 22);
    const Tensor z = randn({batch, cfg.z_dim}, gen), tokens = randn({batch, text_tokens, cfg.text_in_dim}, gen);
    std::vector<int64_t> eot_v;
    for (int64_t b = 0; b < batch; ++b) eot_v.push_back(text_tokens - 1 - (b * 5) % (text_tokens / 2));
    const Tensor eot = from_vector_i64(eot_v, {batch});
    io::NamedTensors inputs = {{"z", z}, {"clip_tokens", tokens}, {"eot", eot}};
    std::map<int64_t, Tensor> go;
    for (int64_t r = 4; r <= cfg.image_size; r *= 2) {
      go[r] = randn({batch, cfg.image_channels, r, r}, gen);
      inputs.emplace_back("go/" + std::to_string(r), go[r]);
    }
    const std::string wpath = files.add(".g.weights.safetensors"), ipath = files.add(".g.inputs.safetensors");
    nn::save_state_dict(g, wpath);
    nlohmann::json buffers = nlohmann::json::array();
    for (const auto& [name, buf] : g.named_buffers()) buffers.push_back(name);
    io::save_safetensors(ipath, inputs, {{"config", cfg.to_json().dump()}, {"buffers", buffers.dump()}});
    job["cases"]["g_fwd_bwd"] = {{"weights", wpath}, {"inputs", ipath}};

    double loss_value = 0;
    auto step = [&] {
      const aurora::Generator::Output o = g.forward(z, tokens, eot);
      Tensor loss = o.moe_loss;
      for (const auto& [r, img] : o.images) loss = add(loss, sum(mul(img, go.at(r))));
      autograd::backward(loss);
      loss_value = loss.item();
      store.zero_grad();
    };
    ours["g_fwd_bwd"] = run_case("g_fwd_bwd", step, reps, profile_dir);
    our_loss["g_fwd_bwd"] = loss_value;
  }

  if (ours_only) {
    for (const auto& [name, r] : ours)
      std::printf("%-12s ours %10.3f ms  peak %lld B  loss %.6g\n", name.c_str(), r.time_ms, (long long)r.peak_bytes,
                  our_loss[name]);
    return 0;
  }
  const std::string cmd = std::string(ENGINE_PYTHON) + " " + ENGINE_SOURCE_DIR + "/bench/bench_model_torch.py '" +
                          job.dump() + "'";
  const nlohmann::json ref = nlohmann::json::parse(bench::run_command(cmd, "bench_model"));

  bench::print_report(ours, ref);
  int rc = 0;
  if (check) {
    for (const auto& [name, v] : our_loss) {
      const double rv = ref[name]["loss"].get<double>();
      const bool ok = std::abs(v - rv) <= 1e-3 * std::abs(rv) + 1e-6;
      std::printf("check %s: loss ours=%.6g ref=%.6g %s\n", name.c_str(), v, rv, ok ? "ok" : "MISMATCH");
      rc |= ok ? 0 : 2;
    }
  }
  return rc;
}
