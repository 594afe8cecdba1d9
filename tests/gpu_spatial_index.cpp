// gpu_spatial_index: the spatial, indexing and attention ops on CUDA against the CPU ops (which
// tests/test_upfirdn, test_deform, test_index, test_pool and test_l2_attention_fused check against
// PyTorch and finite differences): upfirdn2d, deform_conv2d (+ its backward), max/avg_pool2d,
// gather, index_select, scatter_add, index_add, one_hot, cat, stack, split/chunk and the fused L2
// attention (both logit forms), forward f32 + f64, backward and, where the CPU op has one, the backward of the
// backward, in the geometries Aurora uses (StyleGAN2 up2/down2 FIR filters, MTM's batch-folded
// deformable convolution with groups = batch, MoE dispatch/combine by index_select/index_add).
//
// Tolerances (would hold on a real GPU, not only in emulation): f32 rtol 1e-5 / atol 1e-6 for
// sums of a few terms in the CPU's order (upfirdn, pools, index ops; the scatters add in the
// hardware's order), rtol 1e-4 / atol 1e-5 for the long sums of deform_conv2d and attention (the
// GPU kernels sum in another order than the CPU's GEMMs, and may contract into FMAs); f64 1e-12.
// Index values are exact (integers), the one-hot and gather results bit-exact.
//
// Second order: check_op's double backward (d/dx of sum(grad_x * v), through the GPU's
// reductions) where it is not trivially zero, and for the linear ops also d/d(up)
// <grad_x(y; up), v>: the recorded backward differentiated again w.r.t. the upstream gradient
// (for a linear op, the whole of its second-order behaviour). L2 attention's double backward
// runs its differentiable formula (matmul, softmax, sums on the GPU).
#include <doctest/doctest.h>

#include <vector>

#include "gpu_fixtures.h"
#include "tensor/ops_l2_attention.h"

using namespace engine;
using gpu_test::check_close;
using gpu_test::check_equal;
using gpu_test::check_op;
using gpu_test::kGpu;

namespace {

Tensor rnd(const Dims& s, DType dt, uint64_t seed, bool grad = true) {
  Generator gen(seed);
  Tensor t = randn(s, gen, opts(dt));
  if (grad) t.requires_grad_(true);
  return t;
}

Tensor idx(const std::vector<int64_t>& v, const Dims& s) { return from_vector_i64(v, s, opts(DType::i64)); }

double rtol_of(DType dt, double f32) { return dt == DType::f64 ? 1e-12 : f32; }
double atol_of(DType dt, double f32) { return dt == DType::f64 ? 1e-12 : f32; }

// The backward of the backward w.r.t. the upstream gradient (see the header): CPU vs GPU.
void check_second_order(const std::string& what, const std::vector<Tensor>& cpu_inputs,
                        const std::function<Tensor(const std::vector<Tensor>&)>& f, double rtol, double atol) {
  std::vector<Tensor> gpu_inputs;
  for (const Tensor& t : cpu_inputs) gpu_inputs.push_back(t.defined() ? gpu_test::gpu_leaf(t) : Tensor());
  TensorList wrt_cpu, wrt_gpu;
  for (size_t i = 0; i < cpu_inputs.size(); ++i)
    if (cpu_inputs[i].defined() && cpu_inputs[i].requires_grad()) {
      wrt_cpu.push_back(cpu_inputs[i]);
      wrt_gpu.push_back(gpu_inputs[i]);
    }
  const Tensor y_cpu = f(cpu_inputs), y_gpu = f(gpu_inputs);
  Generator gen(77);
  Tensor up_cpu = randn(y_cpu.sizes(), gen, opts(y_cpu.dtype()));
  Tensor up_gpu = up_cpu.to(kGpu);
  up_cpu.requires_grad_(true);
  up_gpu.requires_grad_(true);
  const TensorList g_cpu = autograd::grad({y_cpu}, wrt_cpu, {up_cpu}, true, true, true);
  const TensorList g_gpu = autograd::grad({y_gpu}, wrt_gpu, {up_gpu}, true, true, true);
  TensorList outs_cpu, outs_gpu, vs_cpu, vs_gpu;
  for (size_t i = 0; i < g_cpu.size(); ++i) {
    if (!g_cpu[i].defined() || !g_cpu[i].requires_grad()) continue;
    const Tensor v = randn(g_cpu[i].sizes(), gen, opts(g_cpu[i].dtype()));
    outs_cpu.push_back(g_cpu[i]);
    outs_gpu.push_back(g_gpu[i]);
    vs_cpu.push_back(v);
    vs_gpu.push_back(v.to(kGpu));
  }
  REQUIRE(!outs_cpu.empty());
  const TensorList gg_cpu = autograd::grad(outs_cpu, {up_cpu}, vs_cpu, false, true);
  const TensorList gg_gpu = autograd::grad(outs_gpu, {up_gpu}, vs_gpu, false, true);
  check_close(what + " backward of backward", gg_gpu[0], gg_cpu[0], rtol, atol);
}

const DType kTypes[] = {DType::f32, DType::f64};

}  // namespace

TEST_CASE("upfirdn2d on CUDA: StyleGAN2 up2 / down2, 1-D and 2-D filters, any order") {
  if (gpu_test::no_device()) return;
  for (DType dt : kTypes) {
    const std::string type_name = dtype_name(dt);
    CAPTURE(type_name);
    const double rt = rtol_of(dt, 1e-5), at = atol_of(dt, 1e-6);
    const Tensor f1 = from_vector({1, 3, 3, 1}, {4}, opts(DType::f32));
    const Tensor f2 = from_vector({1, 2, 1, 2, 4, 2, 1, 2, 1.5}, {3, 3}, opts(DType::f64));  // not separable
    struct Case {
      const char* name;
      Tensor f;
      UpFirDnParams p;
    };
    UpFirDnParams up2;  // upsample 2x (StyleGAN2's upsample2d: pad (2, 1), gain 4)
    up2.up_x = up2.up_y = 2, up2.pad_x0 = up2.pad_y0 = 2, up2.pad_x1 = up2.pad_y1 = 1, up2.gain = 4;
    UpFirDnParams down2;  // downsample 2x (pad 1 each side)
    down2.down_x = down2.down_y = 2, down2.pad_x0 = down2.pad_y0 = down2.pad_x1 = down2.pad_y1 = 1;
    UpFirDnParams blur;  // the 2-D filter with asymmetric padding and a negative crop, gain 0.5
    blur.pad_x0 = 1, blur.pad_x1 = -1, blur.pad_y0 = 2, blur.pad_y1 = 0, blur.up_x = 3, blur.down_y = 2, blur.gain = 0.5;
    const Case cases[] = {{"up2 1-D", f1, up2}, {"down2 1-D", f1, down2}, {"2-D filter", f2, blur},
                          {"up2 outer-product 2-D", from_vector({1, 3, 3, 1, 3, 9, 9, 3, 3, 9, 9, 3, 1, 3, 3, 1},
                                                                {4, 4}, opts(DType::f32)), up2}};
    for (const Case& c : cases) {
      CAPTURE(c.name);
      const Tensor x = rnd({2, 3, 7, 6}, dt, 11);
      const Tensor f = c.f;
      const UpFirDnParams p = c.p;
      auto op = [f, p](const std::vector<Tensor>& in) {
        return upfirdn2d(in[0], in[0].device().is_cuda() ? f.to(kGpu) : f, p);
      };
      check_op(c.name, {x}, op, rt, at, /*second_order=*/true);
      check_second_order(c.name, {x}, op, rt, at);
    }
  }
}

TEST_CASE("gather / index_select / scatter_add / index_add on CUDA: forward, backward, second order") {
  if (gpu_test::no_device()) return;
  for (DType dt : kTypes) {
    const std::string type_name = dtype_name(dt);
    CAPTURE(type_name);
    const double rt = rtol_of(dt, 1e-5), at = atol_of(dt, 1e-6);
    // gather along dim 1 of [3, 5, 4] with an index [3, 6, 2] (duplicates: scatter collisions back)
    const Tensor x = rnd({3, 5, 4}, dt, 1);
    std::vector<int64_t> gi;
    for (int i = 0; i < 3 * 6 * 2; ++i) gi.push_back((i * 7 + 3) % 5);
    const Tensor gidx = idx(gi, {3, 6, 2});
    auto gather_op = [gidx](const std::vector<Tensor>& in) {
      return gather(in[0], 1, in[0].device().is_cuda() ? gidx.to(kGpu) : gidx);
    };
    check_op("gather", {x}, gather_op, rt, at);
    check_second_order("gather", {x}, gather_op, rt, at);
    // a transposed (non-contiguous) input, gather along the last dim
    auto gather_t = [](const std::vector<Tensor>& in) {
      const Tensor i2 = idx({0, 2, 1, 1, 1, 2, 2, 2, 0, 1, 0, 2}, {4, 3});
      return gather(transpose(in[0], 0, 1), -1, in[0].device().is_cuda() ? i2.to(kGpu) : i2);
    };
    check_op("gather of a transposed view", {rnd({3, 5}, dt, 2)}, gather_t, rt, at);

    // MoE dispatch: index_select rows of tokens [T, C] by expert slots; combine: index_add back.
    const Tensor tokens = rnd({6, 8}, dt, 3);
    const Tensor slots = idx({4, 0, 5, 4, 2, 1, 0, 3}, {8});
    auto dispatch = [slots](const std::vector<Tensor>& in) {
      return index_select(in[0], 0, in[0].device().is_cuda() ? slots.to(kGpu) : slots);
    };
    check_op("index_select (MoE dispatch)", {tokens}, dispatch, rt, at);
    check_second_order("index_select", {tokens}, dispatch, rt, at);
    auto select_inner = [slots](const std::vector<Tensor>& in) {
      const Tensor i2 = idx({1, 1, 0, 5, 2}, {5});
      return index_select(in[0], 1, in[0].device().is_cuda() ? i2.to(kGpu) : i2);
    };
    check_op("index_select along dim 1", {tokens}, select_inner, rt, at);

    const Tensor base = rnd({6, 8}, dt, 4);
    const Tensor expert_out = rnd({8, 8}, dt, 5);
    auto combine = [slots](const std::vector<Tensor>& in) {
      return index_add(in[0], 0, in[0].device().is_cuda() ? slots.to(kGpu) : slots, in[1]);
    };
    check_op("index_add (MoE combine)", {base, expert_out}, combine, rt, at);
    check_second_order("index_add", {base, expert_out}, combine, rt, at);

    const Tensor sx = rnd({3, 5, 4}, dt, 6), src = rnd({3, 6, 2}, dt, 7);
    auto scatter = [gidx](const std::vector<Tensor>& in) {
      return scatter_add(in[0], 1, in[0].device().is_cuda() ? gidx.to(kGpu) : gidx, in[1]);
    };
    check_op("scatter_add", {sx, src}, scatter, rt, at);
    check_second_order("scatter_add", {sx, src}, scatter, rt, at);
  }
}

TEST_CASE("index ops on CUDA: integer data, one_hot, and bad indices") {
  if (gpu_test::no_device()) return;
  // i64 scatter (MoE token counts) is exact
  const Tensor counts = zeros({4}, opts(DType::i64));
  const Tensor e = idx({3, 1, 3, 0, 3, 1}, {6});
  const Tensor ones_i = full({6}, 1.0, opts(DType::i64));
  check_equal("i64 scatter_add counts", scatter_add(counts.to(kGpu), 0, e.to(kGpu), ones_i.to(kGpu)),
              scatter_add(counts, 0, e, ones_i));
  check_equal("i32 index_add", index_add(zeros({4}, opts(DType::i32)).to(kGpu), 0, e.to(kGpu),
                                         full({6}, 2.0, opts(DType::i32)).to(kGpu)),
              index_add(zeros({4}, opts(DType::i32)), 0, e, full({6}, 2.0, opts(DType::i32))));
  check_equal("gather of bool", gather(gt(rnd({6}, DType::f32, 9, false), 0.0).to(kGpu), 0, e.to(kGpu)),
              gather(gt(rnd({6}, DType::f32, 9, false), 0.0), 0, e));
  const Tensor e2 = idx({2, 0, 1, 2, 2, 0}, {2, 3});
  for (DType dt : {DType::f32, DType::i64, DType::boolean}) {
    check_equal(std::string("one_hot ") + dtype_name(dt), one_hot(e2.to(kGpu), 4, dt), one_hot(e2, 4, dt));
    check_equal("one_hot inferred classes", one_hot(e2.to(kGpu), -1, dt), one_hot(e2, -1, dt));
  }
  check_equal("one_hot of a transposed i32 index",
              one_hot(transpose(to_dtype(e2, DType::i32).to(kGpu), 0, 1), 3, DType::f32),
              one_hot(transpose(to_dtype(e2, DType::i32), 0, 1), 3, DType::f32));
  // Bad indices raise errors naming the op and the value, as on the CPU.
  const Tensor bad = idx({0, 7, 1}, {3});
  const Tensor xg = rnd({4, 2}, DType::f32, 10, false).to(kGpu);
  CHECK_THROWS_WITH_AS(index_select(xg, 0, bad.to(kGpu)), doctest::Contains("index_select: index 7"), Error);
  CHECK_THROWS_WITH_AS(index_add(xg, 0, bad.to(kGpu), zeros({3, 2}, opts(DType::f32, kGpu))),
                       doctest::Contains("index_add: index 7"), Error);
  CHECK_THROWS_WITH_AS(gather(xg, 0, idx({0, -1}, {1, 2}).to(kGpu)), doctest::Contains("gather: index -1"), Error);
  CHECK_THROWS_WITH_AS(one_hot(bad.to(kGpu), 3), doctest::Contains("one_hot: index 7"), Error);
  CHECK_THROWS_WITH_AS(index_select(xg, 0, bad), doctest::Contains("index on cpu"), Error);
}

TEST_CASE("cat / stack / split / chunk / pad_into on CUDA") {
  if (gpu_test::no_device()) return;
  for (DType dt : kTypes) {
    const std::string type_name = dtype_name(dt);
    CAPTURE(type_name);
    const double rt = rtol_of(dt, 1e-6), at = atol_of(dt, 1e-7);
    const Tensor a = rnd({2, 3, 4}, dt, 21), b = rnd({2, 5, 4}, dt, 22), c = rnd({2, 1, 4}, dt, 23);
    auto cat_op = [](const std::vector<Tensor>& in) { return cat({in[0], transpose(in[1], 0, 0), in[2]}, 1); };
    check_op("cat", {a, b, c}, cat_op, rt, at);
    check_second_order("cat", {a, b, c}, cat_op, rt, at);
    const Tensor d = rnd({2, 3, 4}, dt, 24);
    auto stack_op = [](const std::vector<Tensor>& in) { return stack({in[0], transpose(in[1], 0, 0)}, 2); };
    check_op("stack", {a, d}, stack_op, rt, at);
    check_second_order("stack", {a, d}, stack_op, rt, at);
    auto split_op = [](const std::vector<Tensor>& in) {
      const TensorList parts = split(in[0], 2, 1);  // 2, 2, 1 (views)
      const TensorList ch = chunk(in[0], 2, 1);  // 3, 2
      const TensorList ss = split_sizes(in[0], {1, 4}, 1);
      return cat({parts[2], parts[0], ch[1], ss[1]}, 1);
    };
    check_op("split / chunk / split_sizes", {b}, split_op, rt, at);
    auto pad_op = [](const std::vector<Tensor>& in) { return pad_into(in[0], {3, 6, 7}, {1, 2, 3}); };
    check_op("pad_into", {a}, pad_op, rt, at);
    check_second_order("pad_into", {a}, pad_op, rt, at);
  }
}

TEST_CASE("max_pool2d / avg_pool2d on CUDA (Inception's pools)") {
  if (gpu_test::no_device()) return;
  autograd::NoGradGuard no_grad;
  for (DType dt : kTypes) {
    const std::string type_name = dtype_name(dt);
    CAPTURE(type_name);
    const double rt = rtol_of(dt, 1e-6), at = atol_of(dt, 1e-7);
    Tensor x = rnd({2, 3, 9, 8}, dt, 31, false);
    const Pool2dParams s2 = Pool2dParams::make(3, 2), s1 = Pool2dParams::make(3, 1, 1);
    check_op("max_pool2d 3x3 s2", {x}, [&](const std::vector<Tensor>& in) { return max_pool2d(in[0], s2); }, rt, at);
    check_op("max_pool2d 3x3 s1 p1", {x}, [&](const std::vector<Tensor>& in) { return max_pool2d(in[0], s1); }, rt, at);
    for (bool include : {false, true})
      check_op("avg_pool2d 3x3 s1 p1", {x},
               [&](const std::vector<Tensor>& in) { return avg_pool2d(in[0], s1, include); }, rt, at);
    check_op("avg_pool2d of a view", {x},
             [&](const std::vector<Tensor>& in) { return avg_pool2d(transpose(in[0], 2, 3), s2, false); }, rt, at);
  }
}

TEST_CASE("deform_conv2d on CUDA: MTM's batch-folded form (groups = batch), first order") {
  if (gpu_test::no_device()) return;
  for (DType dt : kTypes) {
    const std::string type_name = dtype_name(dt);
    CAPTURE(type_name);
    const double rt = rtol_of(dt, 1e-4), at = atol_of(dt, 1e-5);
    // Two samples folded into the channels: x [1, 2*4, 7, 6], weight [2*3, 4, 3, 3], groups 2,
    // offset groups 2 (each sample's own offsets), a mask; offsets large enough to leave the image.
    const int64_t B = 2, C = 4, O = 3;
    const Tensor x = rnd({1, B * C, 7, 6}, dt, 41);
    const Tensor w = rnd({B * O, C, 3, 3}, dt, 42);
    const Tensor bias = rnd({B * O}, dt, 43);
    const Tensor off = mul(rnd({1, 2 * B * 9, 7, 6}, dt, 44, false), 1.7).detach().requires_grad_(true);
    const Tensor mask = sigmoid(rnd({1, B * 9, 7, 6}, dt, 45, false)).detach().requires_grad_(true);
    const Conv2dParams p = Conv2dParams::make(1, 1, 1, B);
    check_op("deform_conv2d groups=B with mask", {x, off, w, bias, mask},
             [p](const std::vector<Tensor>& in) { return deform_conv2d(in[0], in[1], in[2], in[3], in[4], p); }, rt,
             at);
    // Plain: batch 2, stride 2, dilation 2, no mask, no bias, one offset group.
    const Tensor x2 = rnd({2, 3, 9, 8}, dt, 46);
    const Tensor w2 = rnd({5, 3, 3, 2}, dt, 47);
    const Tensor off2 = mul(rnd({2, 2 * 6, 4, 4}, dt, 48, false), 2.0).detach().requires_grad_(true);
    Conv2dParams p2 = Conv2dParams::make(2, 1, 2, 1);
    check_op("deform_conv2d stride 2 dilation 2", {x2, off2, w2},
             [p2](const std::vector<Tensor>& in) { return deform_conv2d(in[0], in[1], in[2], Tensor(), Tensor(), p2); },
             rt, at);
  }
}

TEST_CASE("l2_attention_fused on CUDA: forward and backward") {
  if (gpu_test::no_device()) return;
  for (DType dt : kTypes) {
    const std::string type_name = dtype_name(dt);
    CAPTURE(type_name);
    const double rt = rtol_of(dt, 1e-4), at = atol_of(dt, 1e-5);
    // q, k, v as SelfAttention's views of one projection [B, T, heads, 3, d] (strided).
    const Tensor qkv = rnd({2, 9, 2, 3, 5}, dt, 51);
    auto op = [](const std::vector<Tensor>& in) {
      return l2_attention_fused(select(in[0], 3, 0), select(in[0], 3, 1), select(in[0], 3, 2), 1e-4);
    };
    check_op("self-attention views", {qkv}, op, rt, at);
    // cross attention: Tq != Tk, dv != d, contiguous inputs, one identical key (u at the floor)
    const Tensor q = rnd({1, 4, 3, 6}, dt, 52), k = rnd({1, 7, 3, 6}, dt, 53), v = rnd({1, 7, 3, 2}, dt, 54);
    check_op("cross attention", {q, k, v},
             [](const std::vector<Tensor>& in) { return l2_attention_fused(in[0], in[1], in[2], 1e-3); }, rt, at);
    // create_graph: the backward is recorded from differentiable ops (matmul, softmax, sums), so
    // the double backward runs on the GPU's GEMM and reduction kernels.
    check_op("cross attention, double backward", {q, k, v},
             [](const std::vector<Tensor>& in) { return l2_attention_fused(in[0], in[1], in[2], 1e-3); }, rt, at,
             /*second_order=*/true);
    // The discriminator's form (L2AttnForm::sq_distance): tied q = k as nn/disc_attention.cpp
    // calls it (strided [B, T, heads, d] views of one projection), then untied with Tq != Tk and
    // dv != d, first and second order (R1's double backward).
    const Tensor qv = rnd({2, 9, 2, 2, 5}, dt, 55);
    auto sq_tied = [](const std::vector<Tensor>& in) {
      const Tensor x = select(in[0], 3, 0);
      return l2_attention_fused(x, x, select(in[0], 3, 1), 0.0, L2AttnForm::sq_distance);
    };
    check_op("sq_distance tied views", {qv}, sq_tied, rt, at);
    check_op("sq_distance tied views, double backward", {qv}, sq_tied, rt, at, /*second_order=*/true);
    check_op("sq_distance cross attention", {q, k, v},
             [](const std::vector<Tensor>& in) {
               return l2_attention_fused(in[0], in[1], in[2], 0.0, L2AttnForm::sq_distance);
             },
             rt, at);
  }
}
