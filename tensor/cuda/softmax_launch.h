// softmax_launch.h (cuda): declarations of the softmax, log_softmax and cross_entropy launchers
// (defined and instantiated for f32/f64 in softmax.cu; called from softmax.cpp). Plain types only.
//
// A "line" is one softmax line (the elements along the softmax dim); `lines` numbers them in
// row-major order of the other dims and gives, per operand, where each line starts.
#pragma once
#include <cstdint>

#include "tensor/cuda/chunks.h"
#include "tensor/cuda/device.h"
#include "tensor/cuda/strided.h"

namespace engine::cuda {

// y = softmax(x) (log = false) or log_softmax(x) (log = true) along every line: operand 0 of
// `lines` is x (n elements at stride xs), operand 1 is y (stride ys). One thread per line.
template <typename T>
void launch_softmax(const StridedGeometry<2>& lines, const T* x, int64_t xs, T* y, int64_t ys, int64_t n, bool log,
                    Stream stream);

// dx from the upstream gradient g and the forward output y (operands 0, 1, 2 of `lines` are g,
// y, dx), one thread per line (kernels/softmax.h).
template <typename T>
void launch_softmax_backward(const StridedGeometry<3>& lines, const T* g, int64_t gs, const T* y, int64_t ys, T* dx,
                             int64_t ds, int64_t n, bool log, Stream stream);

// The same with every line cut into chunks (ch, chunks.h; ch.n_units = lines.numel, ch.len = n):
// per (line, chunk) partial maxima, then per line their max (chunk order), per (line, chunk)
// partial sums of exp(x - max) in double, per line their sum (chunk order), then one thread per
// element writes y. `scratch` holds (ch.n_chunks + 2) * lines.numel doubles.
template <typename T>
void launch_softmax_chunked(const StridedGeometry<2>& lines, const T* x, int64_t xs, T* y, int64_t ys, int64_t n,
                            bool log, const Chunks& ch, double* scratch, Stream stream);

// The chunked backward: per (line, chunk) partial sums of g * y (softmax) or g (log_softmax),
// per line their sum in chunk order, then one thread per element writes dx.
// `scratch` holds (ch.n_chunks + 1) * lines.numel doubles.
template <typename T>
void launch_softmax_backward_chunked(const StridedGeometry<3>& lines, const T* g, int64_t gs, const T* y, int64_t ys,
                                     T* dx, int64_t ds, int64_t n, bool log, const Chunks& ch, double* scratch,
                                     Stream stream);

// Logits x [rows, c] (row stride xr, class stride xc), targets t (stride ts, already checked to be
// in range). losses[r] = -log_softmax(x_r)_{t_r} in double (one thread per row), then one thread
// writes out[0] = sum_r losses[r] / rows, summed in row order.
template <typename T>
void launch_cross_entropy(const T* x, int64_t rows, int64_t c, int64_t xr, int64_t xc, const int64_t* t, int64_t ts,
                          double* losses, T* out, Stream stream);

// dx (contiguous [rows, c]) = (softmax(x_r) - onehot(t_r)) * g[0] * inv_n, one thread per row;
// g is the one-element upstream gradient on the device.
template <typename T>
void launch_cross_entropy_backward(const T* x, int64_t rows, int64_t c, int64_t xr, int64_t xc, const int64_t* t,
                                   int64_t ts, const T* g, double inv_n, T* dx, Stream stream);

// The same two for logits whose classes are contiguous (class stride 1; `rows` gives each row's
// start in x, ch.len = c classes), with the classes of a row cut into chunks (ch, chunks.h): the
// row maxima and exponential sums as launch_softmax_chunked's, then one thread per row writes its
// loss (forward; the mean as above) or one thread per element writes dx (backward).
// `scratch` holds (ch.n_chunks + 2) * rows doubles.
template <typename T>
void launch_cross_entropy_chunked(const StridedGeometry<1>& rows, const T* x, const int64_t* t, int64_t ts,
                                  const Chunks& ch, double* scratch, double* losses, T* out, Stream stream);
template <typename T>
void launch_cross_entropy_backward_chunked(const StridedGeometry<1>& rows, const T* x, const int64_t* t, int64_t ts,
                                           const T* g, double inv_n, T* dx, const Chunks& ch, double* scratch,
                                           Stream stream);

// out[r * c + t_r] = 1 for every row (out already zeroed).
template <typename T>
void launch_one_hot(const int64_t* t, int64_t ts, int64_t rows, int64_t c, T* out, Stream stream);

}  // namespace engine::cuda
