// deform.cu: deform_conv2d (DCNv2) forward and backward as direct kernels (no columns buffer, no
// GEMM), over the sampling math of tensor/kernels/deform.h (deform_position, deform_point,
// deform_apply: the CPU loops' own bodies). One thread per independent output:
//
//   forward        (n, o, p)        sum over the group's channels c and taps k
//   grad_x         (n, c, k, p)     grad_col = sum_o W[o, c, k] g[n, o, p], scattered into the four
//                                   corners with atomic adds (the only non-deterministic sum: f32
//                                   grad_x may differ in the last bits from run to run)
//   grad_offset,   (n, g, k, p)     sum over the offset group's channels of grad_col * (d bilinear
//   grad_mask                       / dy, d / dx, bilinear)
//   grad_weight    (o, c, k)        sum over n, p of g[n, o, p] m bilinear(x[n, c], pos)
//   grad_bias      (o)              sum over n, p of g[n, o, p]
//
// The sampling point (a floor and four range checks) is recomputed where it is needed instead of
// stored: it costs less than the memory a plan of N*G*K*P points would take.
#include "tensor/cuda/deform_launch.h"
#include "tensor/cuda/launch.cuh"

namespace engine::cuda {

namespace {

// The sampling point of tap k at pixel p for offset group og of sample n (unmasked coefficients).
template <typename T>
ENGINE_KERNEL kernels::DeformPoint<T> sample_point(const DeformConvShape& s, const T* offset, int64_t n, int64_t og,
                                                  int64_t k, int64_t p) {
  const kernels::DeformGeometry& g = s.g;
  const int64_t K = g.taps(), P = g.pixels();
  const T* off = offset + (n * g.offset_groups + og) * 2 * K * P;
  T y, x;
  kernels::deform_position(g, k, p, off[(2 * k) * P + p], off[(2 * k + 1) * P + p], y, x);
  return kernels::deform_point(g.H, g.W, y, x);
}

template <typename T>
ENGINE_KERNEL T mask_at(const DeformConvShape& s, const T* mask, int64_t n, int64_t og, int64_t k, int64_t p) {
  const int64_t K = s.g.taps(), P = s.g.pixels();
  return mask ? mask[((n * s.g.offset_groups + og) * K + k) * P + p] : T(1);
}

// grad_col[n, c, k, p] = sum over the output channels o of c's weight group of W[o, c, k] g[n, o, p].
template <typename T>
ENGINE_KERNEL T grad_column(const DeformConvShape& s, const T* weight, const T* grad_out, int64_t n, int64_t c,
                            int64_t k, int64_t p) {
  const int64_t K = s.g.taps(), P = s.g.pixels();
  const int64_t cin_g = s.Cin / s.groups, cout_g = s.Cout / s.groups, wg = c / cin_g, cl = c % cin_g;
  T acc = T(0);
  for (int64_t o = wg * cout_g; o < (wg + 1) * cout_g; ++o)
    acc += weight[(o * cin_g + cl) * K + k] * grad_out[(n * s.Cout + o) * P + p];
  return acc;
}

}  // namespace

template <typename T>
void launch_deform_forward(const DeformConvShape& s, const DeformConvArgs<T>& a, T* out, Stream stream) {
  const DeformConvShape sh = s;
  const DeformConvArgs<T> args = a;
  const int64_t P = s.g.pixels();
  launch_elements(
      s.N * s.Cout * P,
      [=] ENGINE_KERNEL(int64_t e) {
        const int64_t K = sh.g.taps(), HW = sh.g.H * sh.g.W;
        const int64_t p = e % P, no = e / P, o = no % sh.Cout, n = no / sh.Cout;
        const int64_t cin_g = sh.Cin / sh.groups, per_og = sh.Cin / sh.g.offset_groups, wg = o / (sh.Cout / sh.groups);
        T acc = args.bias ? args.bias[o] : T(0);
        for (int64_t cl = 0; cl < cin_g; ++cl) {
          const int64_t c = wg * cin_g + cl, og = c / per_og;
          const T* plane = args.x + (n * sh.Cin + c) * HW;
          const T* w = args.weight + (o * cin_g + cl) * K;
          for (int64_t k = 0; k < K; ++k) {
            const kernels::DeformPoint<T> pt = sample_point(sh, args.offset, n, og, k, p);
            const T v = mask_at(sh, args.mask, n, og, k, p) * kernels::deform_apply(plane, pt.idx, pt.value);
            acc += w[k] * v;
          }
        }
        out[e] = acc;
      },
      stream);
}

template <typename T>
void launch_deform_backward(const DeformConvShape& s, const DeformConvArgs<T>& a, T* grad_x, T* grad_offset,
                            T* grad_weight, T* grad_bias, T* grad_mask, Stream stream) {
  const DeformConvShape sh = s;
  const DeformConvArgs<T> args = a;
  const int64_t K = s.g.taps(), P = s.g.pixels(), HW = s.g.H * s.g.W, G = s.g.offset_groups;
  const int64_t per_og = s.Cin / G, cin_g = s.Cin / s.groups;
  if (grad_bias) {
    launch_elements(
        s.Cout,
        [=] ENGINE_KERNEL(int64_t o) {
          T acc = T(0);
          for (int64_t n = 0; n < sh.N; ++n)
            for (int64_t p = 0; p < P; ++p) acc += args.grad_out[(n * sh.Cout + o) * P + p];
          grad_bias[o] = acc;
        },
        stream);
  }
  if (grad_weight) {
    launch_elements(
        s.Cout * cin_g * K,
        [=] ENGINE_KERNEL(int64_t e) {
          const int64_t k = e % K, rest = e / K, cl = rest % cin_g, o = rest / cin_g;
          const int64_t c = (o / (sh.Cout / sh.groups)) * cin_g + cl, og = c / per_og;
          T acc = T(0);
          for (int64_t n = 0; n < sh.N; ++n) {
            const T* plane = args.x + (n * sh.Cin + c) * HW;
            const T* go = args.grad_out + (n * sh.Cout + o) * P;
            for (int64_t p = 0; p < P; ++p) {
              const kernels::DeformPoint<T> pt = sample_point(sh, args.offset, n, og, k, p);
              acc += go[p] * (mask_at(sh, args.mask, n, og, k, p) * kernels::deform_apply(plane, pt.idx, pt.value));
            }
          }
          grad_weight[e] = acc;
        },
        stream);
  }
  if (grad_x) {
    launch_elements(
        s.N * s.Cin * K * P,
        [=] ENGINE_KERNEL(int64_t e) {
          const int64_t p = e % P, r1 = e / P, k = r1 % K, r2 = r1 / K, c = r2 % sh.Cin, n = r2 / sh.Cin;
          const int64_t og = c / per_og;
          const T v = mask_at(sh, args.mask, n, og, k, p) * grad_column(sh, args.weight, args.grad_out, n, c, k, p);
          const kernels::DeformPoint<T> pt = sample_point(sh, args.offset, n, og, k, p);
          T* plane = grad_x + (n * sh.Cin + c) * HW;
          for (int q = 0; q < 4; ++q)
            if (pt.value[q] != T(0)) atomic_add(plane + pt.idx[q], pt.value[q] * v);
        },
        stream);
  }
  if (grad_offset || grad_mask) {
    launch_elements(
        s.N * G * K * P,
        [=] ENGINE_KERNEL(int64_t e) {
          const int64_t p = e % P, r1 = e / P, k = r1 % K, r2 = r1 / K, og = r2 % G, n = r2 / G;
          const kernels::DeformPoint<T> pt = sample_point(sh, args.offset, n, og, k, p);
          const T m = mask_at(sh, args.mask, n, og, k, p);
          T acc_y = T(0), acc_x = T(0), acc_m = T(0);
          for (int64_t c = og * per_og; c < (og + 1) * per_og; ++c) {
            const T* plane = args.x + (n * sh.Cin + c) * HW;
            const T gc = grad_column(sh, args.weight, args.grad_out, n, c, k, p);
            acc_y += gc * kernels::deform_apply(plane, pt.idx, pt.dy);
            acc_x += gc * kernels::deform_apply(plane, pt.idx, pt.dx);
            acc_m += gc * kernels::deform_apply(plane, pt.idx, pt.value);
          }
          if (grad_offset) {
            T* off = grad_offset + (n * G + og) * 2 * K * P;
            off[(2 * k) * P + p] = m * acc_y;
            off[(2 * k + 1) * P + p] = m * acc_x;
          }
          if (grad_mask) grad_mask[((n * G + og) * K + k) * P + p] = acc_m;
        },
        stream);
  }
}

template void launch_deform_forward<float>(const DeformConvShape&, const DeformConvArgs<float>&, float*, Stream);
template void launch_deform_forward<double>(const DeformConvShape&, const DeformConvArgs<double>&, double*, Stream);
template void launch_deform_backward<float>(const DeformConvShape&, const DeformConvArgs<float>&, float*, float*, float*,
                                            float*, float*, Stream);
template void launch_deform_backward<double>(const DeformConvShape&, const DeformConvArgs<double>&, double*, double*,
                                             double*, double*, double*, Stream);

}  // namespace engine::cuda
