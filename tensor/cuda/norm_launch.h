// norm_launch.h (cuda): declarations of the layer_norm / group_norm launchers (defined and
// instantiated for f32/f64 in norm.cu, called from norm.cpp). Plain types only (nvcc-safe).
//
// Geometry as autograd/formulas/norm.h's NormGeometry: `rows` = A * groups contiguous rows of
// k = cg * hw values; row r belongs to group r % groups, whose first channel is (r % groups) * cg;
// per-channel affine parameters (layer_norm: cg = k, hw = 1).
#pragma once
#include <cstdint>

#include "tensor/cuda/chunks.h"
#include "tensor/cuda/device.h"

namespace engine::cuda {

struct NormShape {
  int64_t rows = 0, groups = 1, cg = 1, hw = 1;
  double eps = 1e-5;
};

// y = (x - mean) rstd w + b per row (w, b may be null); mean and rstd (f64 [rows]) are written
// for the backward. One thread per row.
template <typename T>
void launch_norm_forward(const NormShape& s, const T* x, const T* w, const T* b, T* y, double* mean, double* rstd,
                         Stream stream);

// dx of every row from g, x, w (may be null) and the forward's statistics. One thread per row.
template <typename T>
void launch_norm_backward_dx(const NormShape& s, const T* g, const T* x, const T* w, const double* mean,
                             const double* rstd, T* dx, Stream stream);

// The same two with every row cut into chunks (ch, chunks.h; ch.n_units = rows, ch.len = k):
// one thread per (row, chunk) writes partial sums in double, combined per row in chunk order by
// a separate launch, then one thread per element. `scratch`: (2 * ch.n_chunks + 2) * rows doubles.
template <typename T>
void launch_norm_forward_chunked(const NormShape& s, const T* x, const T* w, const T* b, T* y, double* mean,
                                 double* rstd, const Chunks& ch, double* scratch, Stream stream);
template <typename T>
void launch_norm_backward_dx_chunked(const NormShape& s, const T* g, const T* x, const T* w, const double* mean,
                                     const double* rstd, T* dx, const Chunks& ch, double* scratch, Stream stream);

// layer_norm's dw, db (either may be null) over the k columns: thread (chunk c, column j) sums
// rows [c * chunk, (c + 1) * chunk) into partial[2 * (c * k + j) + {0, 1}] (a device scratch of
// 2 * n_chunks * k doubles), then one thread per column adds the chunks in order.
template <typename T>
void launch_layer_norm_param_grads(const NormShape& s, const T* g, const T* x, const double* mean,
                                   const double* rstd, double* partial, int64_t chunk, int64_t n_chunks, T* dw, T* db,
                                   Stream stream);

// group_norm's dw, db (either may be null) over the groups * cg channels, A = rows / groups
// samples: thread (sample, channel) sums its run of hw values into partial[2 * (n * channels + ch)
// + {0, 1}] (2 * rows * cg doubles), then one thread per channel adds the samples in order.
template <typename T>
void launch_group_norm_param_grads(const NormShape& s, const T* g, const T* x, const double* mean,
                                   const double* rstd, double* partial, T* dw, T* db, Stream stream);

}  // namespace engine::cuda
