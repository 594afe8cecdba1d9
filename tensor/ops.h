// ops.h: the public functional API of the engine (DESIGN.md section 4).
//
// Every function here is differentiable (records an autograd Node when grad mode is on and an
// input requires grad) unless marked "no grad". Backward formulas live in autograd/formulas.cpp,
// one place for all of them. Each op opens a memory::OpScope so the profiler can attribute its
// bytes. Implementations are grouped by op family in tensor/ops_<family>.cpp; the arithmetic is
// in tensor/kernels/ (portable host+device functors) and the loops in tensor/cpu/ and tensor/cuda/.
#pragma once
#include <array>
#include <optional>
#include <vector>

#include "tensor/tensor.h"

namespace engine {

// ---- Views (ops_view.cpp): share storage and version counter -------------------------------
Tensor reshape(const Tensor& x, const Dims& shape);  // view when possible, else copy; one -1 allowed
Tensor view(const Tensor& x, const Dims& shape);     // must be viewable; one -1 allowed
Tensor flatten(const Tensor& x, int64_t start_dim = 0, int64_t end_dim = -1);
Tensor permute(const Tensor& x, const Dims& dims);
Tensor transpose(const Tensor& x, int64_t dim0, int64_t dim1);
Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length);  // a.k.a. slice
Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end, int64_t step = 1);
Tensor select(const Tensor& x, int64_t dim, int64_t index);  // removes the dim
Tensor expand(const Tensor& x, const Dims& shape);  // -1 keeps a size
Tensor squeeze(const Tensor& x, int64_t dim);
Tensor unsqueeze(const Tensor& x, int64_t dim);
Tensor as_strided(const Tensor& x, const Dims& sizes, const Dims& strides, int64_t offset);
Tensor contiguous(const Tensor& x);  // x itself when already contiguous
Tensor clone(const Tensor& x);       // always a fresh contiguous copy
Tensor to_dtype(const Tensor& x, DType dtype);  // differentiable between floating types

// The backward of slice: a zero tensor of `input_sizes` with `g` written at the slice.
Tensor slice_backward(const Tensor& g, const Dims& input_sizes, int64_t dim, int64_t start, int64_t end,
                      int64_t step);
// Reverse of broadcasting: sum `g` down to `shape` (the backward of expand / broadcasting).
Tensor sum_to(const Tensor& g, const Dims& shape);
// The broadcast shape of two shapes (NumPy rules); throws naming `op`.
Dims broadcast_shapes(const Dims& a, const Dims& b, const char* op);

// ---- Elementwise (ops_elementwise.cpp), NumPy broadcasting ----------------------------------
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor add(const Tensor& a, double b);
Tensor sub(const Tensor& a, double b);
Tensor rsub(double a, const Tensor& b);  // a - b
Tensor mul(const Tensor& a, double b);
Tensor div(const Tensor& a, double b);
Tensor rdiv(double a, const Tensor& b);  // a / b
Tensor neg(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor rsqrt(const Tensor& x);
Tensor pow(const Tensor& x, double exponent);
Tensor square(const Tensor& x);
Tensor abs(const Tensor& x);
Tensor sign(const Tensor& x);  // no grad (zero gradient)
Tensor sin(const Tensor& x);
Tensor cos(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor tanh(const Tensor& x);
Tensor erf(const Tensor& x);
enum class GeluApprox { none, tanh };
Tensor gelu(const Tensor& x, GeluApprox approximate = GeluApprox::none);
// leaky_relu(x) * gain; StyleGAN's lrelu uses slope 0.2 and gain sqrt(2).
Tensor leaky_relu(const Tensor& x, double negative_slope = 0.01, double gain = 1.0);
Tensor relu(const Tensor& x);
Tensor softplus(const Tensor& x);  // log(1 + exp(x)), stable
Tensor where(const Tensor& condition, const Tensor& a, const Tensor& b);  // condition: bool/u8
Tensor clamp(const Tensor& x, std::optional<double> min, std::optional<double> max);
Tensor maximum(const Tensor& a, const Tensor& b);  // ties: gradient split in half (as PyTorch)
Tensor minimum(const Tensor& a, const Tensor& b);
// Comparisons: no grad, return bool tensors.
Tensor eq(const Tensor& a, const Tensor& b);
Tensor ne(const Tensor& a, const Tensor& b);
Tensor lt(const Tensor& a, const Tensor& b);
Tensor le(const Tensor& a, const Tensor& b);
Tensor gt(const Tensor& a, const Tensor& b);
Tensor ge(const Tensor& a, const Tensor& b);
Tensor gt(const Tensor& a, double b);
Tensor lt(const Tensor& a, double b);
Tensor ge(const Tensor& a, double b);
Tensor le(const Tensor& a, double b);
Tensor logical_not(const Tensor& a);

// ---- Reductions (ops_reduce.cpp); empty `dims` means all dims -------------------------------
Tensor sum(const Tensor& x, const Dims& dims = {}, bool keepdim = false);
Tensor mean(const Tensor& x, const Dims& dims = {}, bool keepdim = false);
Tensor amax(const Tensor& x, const Dims& dims = {}, bool keepdim = false);  // ties share grad
Tensor amin(const Tensor& x, const Dims& dims = {}, bool keepdim = false);
Tensor logsumexp(const Tensor& x, const Dims& dims, bool keepdim = false);
Tensor var(const Tensor& x, const Dims& dims = {}, int64_t correction = 1, bool keepdim = false);
Tensor argmax(const Tensor& x, int64_t dim, bool keepdim = false);  // no grad, i64

// ---- Softmax and losses (ops_softmax.cpp) ---------------------------------------------------
Tensor softmax(const Tensor& x, int64_t dim);
Tensor log_softmax(const Tensor& x, int64_t dim);
// Mean over the batch of -log_softmax(logits)[i, target[i]]; logits [N, C], target i64 [N].
Tensor cross_entropy(const Tensor& logits, const Tensor& target);

// ---- Linear algebra (ops_matmul.cpp): OpenBLAS on the CPU -----------------------------------
// matmul: [.., n, k] x [.., k, m] with broadcasting of batch dims; 1-D operands as in NumPy.
Tensor matmul(const Tensor& a, const Tensor& b);
Tensor bmm(const Tensor& a, const Tensor& b);  // [B, n, k] x [B, k, m]
// y = x W^T + b: x [.., in], W [out, in], b [out] (optional)
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());

// ---- Convolution (ops_conv.cpp): im2col + GEMM ----------------------------------------------
// Note [conv as three differentiable primitives]: conv2d's input gradient is conv_transpose2d
// and its weight gradient is conv2d_weight; each of the three has a backward made of the other
// two, so convolution is differentiable to any order (R1 needs order two).
struct Conv2dParams {
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_h = 0, pad_w = 0;
  int64_t dilation_h = 1, dilation_w = 1;
  int64_t groups = 1;
  static Conv2dParams make(int64_t stride, int64_t padding, int64_t dilation = 1, int64_t groups = 1) {
    return {stride, stride, padding, padding, dilation, dilation, groups};
  }
};
// x [N, Cin, H, W], weight [Cout, Cin/groups, kh, kw], bias [Cout] (optional).
// Batch-grouped weights (StyleGAN2's modulated conv): reshape x to [1, N*Cin, H, W] and the
// per-sample weights to [N*Cout, Cin, kh, kw], then groups = N.
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor(),
              const Conv2dParams& p = {});
// The adjoint of conv2d w.r.t. its input: maps [N, Cout, Ho, Wo] to [N, Cin, H, W].
// `output_padding` picks H, W among the sizes that give Ho, Wo. weight as in conv2d.
Tensor conv_transpose2d(const Tensor& y, const Tensor& weight, const Tensor& bias, const Conv2dParams& p,
                        int64_t output_padding_h = 0, int64_t output_padding_w = 0);
// The gradient of conv2d w.r.t. its weight: from input x and output-gradient gy, the weight-shaped
// tensor [Cout, Cin/groups, kh, kw] (kh, kw given).
Tensor conv2d_weight(const Tensor& x, const Tensor& gy, int64_t kh, int64_t kw, const Conv2dParams& p);

// ---- FIR resampling (ops_upfirdn.cpp), StyleGAN2's upfirdn2d --------------------------------
// x [N, C, H, W]; f: a 1-D [k] (separable, applied along both axes) or 2-D [kh, kw] filter.
// Steps: insert up-1 zeros after each pixel (size H*up), pad (x0, x1, y0, y1; negative crops),
// correlate with the flipped filter times gain (i.e. true convolution, as StyleGAN2), keep every
// down-th pixel. f is a constant (no gradient; it must not require grad).
// Its backward is upfirdn2d with the filter flipped and up/down swapped (any order).
struct UpFirDnParams {
  int64_t up_x = 1, up_y = 1, down_x = 1, down_y = 1;
  int64_t pad_x0 = 0, pad_x1 = 0, pad_y0 = 0, pad_y1 = 0;
  double gain = 1.0;
};
Tensor upfirdn2d(const Tensor& x, const Tensor& f, const UpFirDnParams& p);

// ---- Deformable convolution (ops_deform.cpp) ------------------------------------------------
// Modulated deformable convolution (DCNv2) with torchvision.ops.deform_conv2d's semantics.
// x [N, Cin, H, W]; weight [Cout, Cin/groups, kh, kw] with groups = p.groups weight groups;
// offset [N, 2*G*kh*kw, Ho, Wo] with G offset groups (inferred from its channels; Cin % G == 0),
// channels interleaved (dy, dx) per tap: offset group g, tap (i, j) reads dy from channel
// 2*(g*kh*kw + i*kw + j) and dx from the next one; mask [N, G*kh*kw, Ho, Wo] (optional: an
// undefined mask is plain DCNv1); bias [Cout] (optional). Stride, padding, dilation from p.
// Samples are bilinear with zeros outside the image. Aurora's MTM folds its batch into channels:
// x [1, B*Cin, H, W], weight [B*Cout, Cin, 3, 3] (groups = B), offset [1, B*18, H, W], mask
// [1, B*9, H, W] (G = B), padding 1. Differentiable once: a double backward raises an error.
Tensor deform_conv2d(const Tensor& x, const Tensor& offset, const Tensor& weight, const Tensor& bias,
                     const Tensor& mask, const Conv2dParams& p);
// No grad: the gradients of deform_conv2d given grad_out [N, Cout, Ho, Wo]; only those flagged in
// `needed` (x, offset, weight, bias, mask) are computed, the others are left undefined (and the
// mask gradient is undefined when mask is).
struct DeformConv2dGrads {
  Tensor x, offset, weight, bias, mask;
};
DeformConv2dGrads deform_conv2d_backward(const Tensor& grad_out, const Tensor& x, const Tensor& offset,
                                         const Tensor& weight, const Tensor& mask, const Conv2dParams& p,
                                         const std::array<bool, 5>& needed);

// ---- Indexing (ops_index.cpp) ---------------------------------------------------------------
Tensor gather(const Tensor& x, int64_t dim, const Tensor& index);  // index i64, same ndim
Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index);  // index i64 1-D
// out = x with out[..., index[i], ...] += src[..., i, ...] along dim (as torch.scatter_add with
// index of src's shape).
Tensor scatter_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src);
// out[i, index[i]] rows: index_add along dim with 1-D index (the backward of index_select).
Tensor index_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src);
Tensor one_hot(const Tensor& index, int64_t num_classes, DType dtype = DType::f32);  // no grad
Tensor cat(const TensorList& xs, int64_t dim);
Tensor stack(const TensorList& xs, int64_t dim);
TensorList split(const Tensor& x, int64_t split_size, int64_t dim);
TensorList split_sizes(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim);
TensorList chunk(const Tensor& x, int64_t chunks, int64_t dim);
// Zero-padding by slices: out has `sizes`, x is written at `offsets` (the backward of narrow).
Tensor pad_into(const Tensor& x, const Dims& sizes, const Dims& offsets);

// ---- Normalisation (ops_norm.cpp), statistics in f32 or f64 ---------------------------------
Tensor layer_norm(const Tensor& x, const Dims& normalized_shape, const Tensor& weight = Tensor(),
                  const Tensor& bias = Tensor(), double eps = 1e-5);
Tensor group_norm(const Tensor& x, int64_t num_groups, const Tensor& weight = Tensor(),
                  const Tensor& bias = Tensor(), double eps = 1e-5);

// ---- Pooling (ops_pool.cpp): forward only, for evaluation (the FID Inception-v3) -------------
// x [N, C, H, W]; Ho = floor((H + 2 pad_h - kernel_h) / stride_h) + 1 (PyTorch's floor mode),
// padding at most half the kernel. Not differentiable: with grad mode on and an input that requires
// grad they raise an error naming the op (run them under autograd::NoGradGuard).
struct Pool2dParams {
  int64_t kernel_h = 1, kernel_w = 1;
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_h = 0, pad_w = 0;
  static Pool2dParams make(int64_t kernel, int64_t stride, int64_t padding = 0) {
    return {kernel, kernel, stride, stride, padding, padding};
  }
};
// Maximum over each window; padded positions never win (they count as -infinity). NaN propagates.
Tensor max_pool2d(const Tensor& x, const Pool2dParams& p);
// Mean over each window. count_include_pad = false divides by the number of in-image pixels of the
// window (what the FID Inception's pool branches use), true by kernel_h * kernel_w.
Tensor avg_pool2d(const Tensor& x, const Pool2dParams& p, bool count_include_pad = true);

// ---- Fused (ops_fused.cpp) -------------------------------------------------------------------
// StyleGAN2's bias_act: y = act(x + bias broadcast along `dim`) * gain, then clamped to
// [-clamp, clamp] when clamp is given; one pass over memory (tensor/kernels/bias_act.h). bias may
// be undefined (activation and gain only). alpha is lrelu's slope (>= 0), gain > 0, clamp > 0.
// Differentiable to any order: the backward is bias_act_grad (Note [bias_act double backward] in
// autograd/formulas/fused.cpp).
enum class BiasActKind : int { linear = 0, relu = 1, lrelu = 2 };
Tensor bias_act(const Tensor& x, const Tensor& bias, int64_t dim = 1, BiasActKind act = BiasActKind::linear,
                double alpha = 0.2, double gain = 1.0, std::optional<double> clamp = std::nullopt);
// dL/dx of bias_act given dL/dy `gy` and bias_act's output `y` (same shape): gy * gain * act'(y),
// 0 where |y| >= clamp. Linear in gy; differentiable to any order (its own backward).
Tensor bias_act_grad(const Tensor& gy, const Tensor& y, BiasActKind act, double alpha, double gain,
                     std::optional<double> clamp = std::nullopt);

// Aurora's modulation + demodulation (docs/aurora-spec.md 3.3-3.4) as one op: from the kernel K
// [Cout, Cin, *taps] (shared) or [B, Cout, Cin, *taps] (`batched`, a per-sample bank) and the
// styles s [B, Cin], the per-sample weight W [B, Cout, Cin, *taps] (`transposed`: [B, Cin, Cout,
// *taps]):
//   demodulate: K rows rms-normalised, s / rms(s) over the whole tensor, W = K s, then
//               W / sqrt(sum_{Cin,taps} W^2 + eps) per (b, o);  otherwise W = K s weight_gain.
// Formulas, passes and the backward: tensor/kernels/modulated_weight.h. Differentiable to second
// order (Note [modulated_weight backward] in autograd/formulas/fused.cpp).
struct ModulatedWeightParams {
  bool batched = false;
  bool demodulate = true;
  double weight_gain = 1.0;  // !demodulate only
  double eps = 1e-8;         // demodulate only
  bool transposed = false;
};
Tensor modulated_weight(const Tensor& kernel, const Tensor& styles, const ModulatedWeightParams& p);
// Its first-order backward as fused kernels (no graph recorded): {dL/dkernel, dL/dstyles} from
// grad = dL/dW; an entry is undefined when its need_* flag is false.
TensorList modulated_weight_grad(const Tensor& grad, const Tensor& kernel, const Tensor& styles,
                                 const ModulatedWeightParams& p, bool need_kernel = true, bool need_styles = true);

// No grad, in place: one AdamW step (tensor/kernels/adamw.h) on elements [offset, offset + numel)
// of the flat parameter buffer p, its gradient g and moments m, v (same dtype, device and size),
// with the per-segment constants of nn::AdamW. CPU (OpenMP) or CUDA, where p lives.
struct AdamWScalars {
  double b1, b2, eps;
  double decay, step_size, inv_c2;  // 1 - lr wd (or 1), lr / (1 - b1^t), 1 / (1 - b2^t)
};
void adamw_update_(const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v, int64_t offset,
                   int64_t numel, const AdamWScalars& s);

// ---- Operators ------------------------------------------------------------------------------
inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
inline Tensor operator+(const Tensor& a, double b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, double b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, double b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, double b) { return div(a, b); }
inline Tensor operator+(double a, const Tensor& b) { return add(b, a); }
inline Tensor operator-(double a, const Tensor& b) { return rsub(a, b); }
inline Tensor operator*(double a, const Tensor& b) { return mul(b, a); }
inline Tensor operator/(double a, const Tensor& b) { return rdiv(a, b); }
inline Tensor operator-(const Tensor& a) { return neg(a); }

}  // namespace engine
