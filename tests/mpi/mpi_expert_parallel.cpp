// mpi_expert_parallel.cpp: expert parallelism (dist/expert_parallel.h) equals the one-process
// nn::MoE, at np = 1, 2, 4 with EP = 1, 2, 4 (every EP size that divides the world).
//
// Each rank holds an uneven number of images (1, 2, 3, 1, ... by rank); images, w and the output
// cotangents are drawn by global image index, so every rank can also build the whole batch. The
// reference is nn::MoE::forward on the whole batch in this process (f64). Checked:
//   forward   y of this rank's images = the reference rows;
//   losses    this rank's z and aux losses = nn::MoE on this rank's images alone, and their
//             image-weighted sum over ranks = the reference losses of the whole batch;
//   backward  L_r = sum(y_r * gy_r) + (B_r / B) loss_r on every rank, gradients reduced by
//             DataParallel with the EP ranges registered: router and owned experts equal the
//             reference gradients of sum_r L_r divided by the world size (the EDP-only reduction
//             and the 1/world scale of distributed-notes.md 2.4), experts owned elsewhere are
//             zero, and the input gradients (x and w) equal the reference rows;
//   tree      a module tree with two MoE layers (4 and 8 experts) through dist::ExpertParallel's
//             forward hooks: output, input and all gradients; gather_experts (checkpoints) gives
//             every rank every expert's parameters and gradients;
//   double    a gradient-penalty-like second-order step (grad of sum(y gy) w.r.t. x with
//             create_graph, then backward of its squared norm) gives the reference parameter
//             gradients: the backward all-to-alls are themselves differentiable.
// Routing cases: expert 3 never chosen (router bias -60: an idle expert and, at EP = 4, a rank
// that receives no token), and experts 2 and 3 never chosen (at EP = 2 a whole rank receives
// nothing). The test checks that the routing really produced those zero counts.
// Tolerances (f64): rtol 1e-9, atol 1e-12; the one-process and sharded computations differ only in
// summation order (see config() for the router's demodulation eps).
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "autograd/engine.h"
#include "autograd/grad_mode.h"
#include "dist/data_parallel.h"
#include "dist/expert_parallel.h"
#include "mpi_test.h"
#include "nn/moe.h"
#include "tensor/ops.h"

using namespace engine;
using mpi_test::Context;

namespace {

constexpr int64_t kC = 4, kH = 8, kE = 4, kWdim = 3, kT = 6;
constexpr double kRtol = 1e-9, kAtol = 1e-12;
const TensorOptions f64{DType::f64};

nn::MoEConfig config() {
  nn::MoEConfig c;
  c.channels = kC;
  c.hidden = kH;
  c.num_experts = kE;
  c.w_dim = kWdim;
  c.z_loss_weight = 0.3;  // large enough that the losses' gradients matter in the comparison
  c.aux_loss_weight = 0.2;
  // The router normalises the styles by one RMS over the batch, which demodulation cancels up to
  // demod_eps: with the default 1e-8 the layer couples the images of a batch at about 1e-7
  // (relative, measured on the w gradients), so "this rank's images" and "rows of the whole
  // batch" differ by that much whatever the parallelism (EP = 1 included). A negligible eps makes
  // the images independent, which is what the sharded-vs-one-process comparison needs.
  c.demod_eps = 1e-30;
  return c;
}

int64_t images_of(int rank) { return 1 + rank % 3; }
int64_t first_image(int rank) {
  int64_t n = 0;
  for (int r = 0; r < rank; ++r) n += images_of(r);
  return n;
}

// Rows [first, first + count) of a per-image tensor of shape `shape` (the image axis excluded).
Tensor images(uint64_t purpose, int64_t first, int64_t count, const Dims& shape) {
  TensorList rows;
  for (int64_t i = first; i < first + count; ++i) {
    Generator gen(777 + purpose, uint64_t(i) * 4096);
    rows.push_back(unsqueeze(randn(shape, gen, f64), 0));
  }
  return cat(rows, 0);
}

struct Layer {
  nn::MoE moe{config()};
  nn::ParameterStore store;
  explicit Layer(const std::vector<double>& bias) {
    store.materialize(moe, 5, TensorOptions{DType::f64, Device::cpu(), memory::Kind::param});
    autograd::NoGradGuard ng;
    copy_(moe.router.bias.value, from_vector(bias, {kE}, f64));
  }
};

struct Inputs {
  Tensor x, w, gy;
};
Inputs inputs(int64_t first, int64_t count) {
  Inputs in;
  in.x = images(1, first, count, {kT, kC}).detach().requires_grad_(true);
  in.w = images(2, first, count, {kWdim}).detach().requires_grad_(true);
  in.gy = images(3, first, count, {kT, kC});
  return in;
}

void close(Context& t, const std::string& what, const Tensor& got, const Tensor& want) {
  std::string why;
  const bool ok = got.defined() && got.sizes() == want.sizes() &&
                  mpi_test::allclose(got.to_vector(), want.to_vector(), kRtol, kAtol, &why);
  MT_CHECK(t, ok, "{}: {}", what, got.defined() ? why : std::string("undefined"));
}

void run_case(Context& t, const std::vector<double>& bias, const std::vector<int64_t>& idle_experts) {
  dist::Comm& world = t.comm;
  const int W = world.size(), me = world.rank();
  int64_t total_images = 0;
  for (int r = 0; r < W; ++r) total_images += images_of(r);
  const int64_t B = images_of(me), first = first_image(me);

  // ---- The one-process reference over the whole batch (every rank computes it).
  Layer ref(bias);
  Inputs all = inputs(0, total_images);
  const nn::MoEOutput ro = ref.moe.forward(all.x, all.w);
  for (int64_t e : idle_experts)
    MT_CHECK(t, ro.tokens_per_expert[size_t(e)] == 0, "expert {} was meant to be idle ({} tokens)", e,
             ro.tokens_per_expert[size_t(e)]);
  autograd::backward(add(sum(mul(ro.y, all.gy)), ro.loss));
  // Reference of the second-order step: grad_x of sum(y gy), then backward of its squared norm.
  Layer ref2(bias);
  Inputs all2 = inputs(0, total_images);
  {
    const nn::MoEOutput o = ref2.moe.forward(all2.x, all2.w);
    const Tensor gx = autograd::grad({sum(mul(o.y, all2.gy))}, {all2.x}, {}, true)[0];
    autograd::backward(sum(square(gx)));
  }
  // This rank's images alone through nn::MoE: the losses of exactly these images.
  Layer alone(bias);
  Inputs mine0 = inputs(first, B);
  const nn::MoEOutput ao = alone.moe.forward(mine0.x, mine0.w);

  for (int ep_size : {1, 2, 4}) {
    if (W % ep_size != 0) continue;
    const std::string tag = fmt::format("EP={} ", ep_size);
    dist::ExpertParallelGroups groups = dist::make_expert_parallel_groups(world, ep_size);
    Layer layer(bias);
    dist::ExpertParallelMoE ep(layer.moe, *groups.ep);
    dist::DataParallel dp(world, layer.store, layer.moe);
    ep.register_with(dp, *groups.edp);
    Inputs mine = inputs(first, B);

    // Forward and losses.
    const nn::MoEOutput o = ep.forward(mine.x, mine.w);
    close(t, tag + "y", o.y, narrow(ro.y, 0, first, B));
    close(t, tag + "z_loss (this rank's images)", o.z_loss, ao.z_loss);
    close(t, tag + "aux_loss (this rank's images)", o.aux_loss, ao.aux_loss);
    Tensor weighted = from_vector({o.z_loss.item() * double(B) / double(total_images),
                                   o.aux_loss.item() * double(B) / double(total_images)},
                                  {2}, f64);
    world.allreduce(weighted);
    close(t, tag + "z_loss (whole batch)", select(weighted, 0, 0), ro.z_loss);
    close(t, tag + "aux_loss (whole batch)", select(weighted, 0, 1), ro.aux_loss);
    MT_CHECK(t, o.tokens_per_expert == ao.tokens_per_expert, "{}routing counts differ from nn::MoE's", tag);

    // Backward.
    autograd::backward(add(sum(mul(o.y, mine.gy)), mul(o.loss, double(B) / double(total_images))));
    close(t, tag + "grad x", mine.x.grad(), narrow(all.x.grad(), 0, first, B));
    close(t, tag + "grad w", mine.w.grad(), narrow(all.w.grad(), 0, first, B));
    dp.allreduce_gradients();
    for (const auto& [name, p] : layer.store.parameters()) {
      const Tensor want = ref.store.find(name)->value.grad();
      const bool expert = name.rfind("experts.", 0) == 0;
      const int64_t e = expert ? std::stoll(name.substr(8)) : -1;
      const bool owned = !expert || (e >= ep.first_local_expert && e < ep.first_local_expert + ep.local_experts);
      if (owned)
        close(t, tag + "grad " + name, p->value.grad(), div(want, double(W)));
      else
        MT_CHECK(t, p->value.grad().to_vector() == std::vector<double>(size_t(p->shape.product()), 0.0),
                 "{}grad {} of an expert owned elsewhere must be zero", tag, name);
    }
    dp.check_consistency();

    // Second order through the all-to-alls.
    layer.store.zero_grad();
    Inputs mine2 = inputs(first, B);
    {
      const nn::MoEOutput o2 = ep.forward(mine2.x, mine2.w);
      const Tensor gx = autograd::grad({sum(mul(o2.y, mine2.gy))}, {mine2.x}, {}, true)[0];
      autograd::backward(sum(square(gx)));
    }
    dp.allreduce_gradients();
    for (const auto& [name, p] : layer.store.parameters()) {
      const bool expert = name.rfind("experts.", 0) == 0;
      const int64_t e = expert ? std::stoll(name.substr(8)) : -1;
      if (expert && !(e >= ep.first_local_expert && e < ep.first_local_expert + ep.local_experts)) continue;
      close(t, tag + "second-order grad " + name, p->value.grad(), div(ref2.store.find(name)->value.grad(), double(W)));
    }
  }
}

void test_one_idle_expert(Context& t) { run_case(t, {0.5, 0.0, 0.2, -60.0}, {3}); }
void test_idle_rank(Context& t) { run_case(t, {0.3, 0.0, -60.0, -60.0}, {2, 3}); }

// ---- A model tree with two MoE layers, through dist::ExpertParallel's hooks -------------------

struct TwoLayers : nn::Module {
  nn::MoE& a;
  nn::MoE& b;
  static nn::MoEConfig cfg(int64_t experts) {
    nn::MoEConfig c = config();
    c.num_experts = experts;
    return c;
  }
  TwoLayers() : Module("TwoLayers"), a(register_module<nn::MoE>("a", cfg(4))), b(register_module<nn::MoE>("b", cfg(8))) {}
  // out = b(a(x) + x); loss = loss_a + loss_b
  std::pair<Tensor, Tensor> forward(const Tensor& x, const Tensor& w) const {
    const nn::MoEOutput oa = a.forward(x, w);
    const nn::MoEOutput ob = b.forward(add(oa.y, x), w);
    return {ob.y, add(oa.loss, ob.loss)};
  }
};

void test_model_tree(Context& t) {
  dist::Comm& world = t.comm;
  const int W = world.size(), me = world.rank();
  int64_t total = 0;
  for (int r = 0; r < W; ++r) total += images_of(r);
  const int64_t B = images_of(me), first = first_image(me);
  const TensorOptions popts{DType::f64, Device::cpu(), memory::Kind::param};

  TwoLayers ref;
  nn::ParameterStore ref_store;
  ref_store.materialize(ref, 9, popts);
  Inputs all = inputs(0, total);
  auto [ry, rloss] = ref.forward(all.x, all.w);
  autograd::backward(add(sum(mul(ry, all.gy)), rloss));

  for (int ep_size : {1, 2, 4}) {
    if (W % ep_size != 0) continue;
    const std::string tag = fmt::format("tree EP={} ", ep_size);
    TwoLayers model;
    nn::ParameterStore store;
    store.materialize(model, 9, popts);
    dist::DataParallel dp(world, store, model);
    {
      dist::ExpertParallel ep(model, world, ep_size);
      MT_CHECK(t, ep.layers.size() == 2, "{}found {} MoE layers", tag, ep.layers.size());
      ep.register_with(dp);
      Inputs mine = inputs(first, B);
      auto [y, loss] = model.forward(mine.x, mine.w);
      close(t, tag + "y", y, narrow(ry, 0, first, B));
      autograd::backward(add(sum(mul(y, mine.gy)), mul(loss, double(B) / double(total))));
      close(t, tag + "grad x", mine.x.grad(), narrow(all.x.grad(), 0, first, B));
      dp.allreduce_gradients();
      // Checkpoint preparation: scribble over the experts this rank does not own, then gather.
      {
        autograd::NoGradGuard ng;
        for (const auto& l : ep.layers)
          for (int64_t e = 0; e < l->num_experts; ++e) {
            if (e >= l->first_local_expert && e < l->first_local_expert + l->local_experts) continue;
            const auto [b0, b1] = l->expert_range(e);
            copy_(narrow(store.flat_params(), 0, b0, b1 - b0), full({b1 - b0}, -1.0 - me, popts));
          }
      }
      ep.gather_experts(store.flat_params());
      ep.gather_experts(store.flat_grads());
      MT_CHECK(t, store.flat_params().to_vector() == ref_store.flat_params().to_vector(),
               "{}after gather_experts every rank holds every expert's parameters", tag);
      close(t, tag + "all gradients after gather", store.flat_grads(), div(ref_store.flat_grads(), double(W)));
    }
    // Hooks removed: the layers are plain nn::MoE again.
    MT_CHECK(t, !model.a.forward_hook && !model.b.forward_hook, "{}hooks must be removed", tag);
  }
}

void test_errors(Context& t) {
  nn::MoEConfig c = config();
  c.num_experts = 3;
  nn::MoE moe(c);
  if (t.comm.size() % 2 == 0) {
    auto groups = dist::make_expert_parallel_groups(t.comm, 2);
    bool threw = false;
    try {
      dist::ExpertParallelMoE ep(moe, *groups.ep);
    } catch (const Error& e) {
      threw = std::string(e.what()).find("3 experts") != std::string::npos;
    }
    MT_CHECK(t, threw, "3 experts over an EP group of 2 must be refused");
  }
  bool threw = false;
  try {
    dist::make_expert_parallel_groups(t.comm, t.comm.size() + 1);
  } catch (const Error&) {
    threw = true;
  }
  MT_CHECK(t, threw, "an EP size that does not divide the world must be refused");
}

}  // namespace

int main(int argc, char** argv) {
  return mpi_test::run(argc, argv,
                       {{"one_idle_expert", test_one_idle_expert},
                        {"idle_rank", test_idle_rank},
                        {"model_tree", test_model_tree},
                        {"errors", test_errors}});
}
