// fid.h: the Frechet Inception Distance (Heusel et al. 2017) as the FID literature computes it
// (docs/eval-data-formats.md section 2), and the reference-FID rule of progressive growing
// (docs/aurora-spec.md section 9). User documentation: docs/evaluation.md.
//
// Pipeline, per image:
//   uint8 RGB [3, H, W]  (real: decoded, centre-cropped and resized to the training resolution;
//                         fake: the generator's f32 output quantised as (x 127.5 + 128).clamp.u8,
//                         the StyleGAN/NVlabs convention)
//   -> resize to 299x299 (inception_input, two conventions, see FidResize)
//   -> FidInception (aurora/inception.h) -> pool3 f32 [2048]
// Statistics: FidAccumulator sums x and x x^T in f64 (features shifted by the first batch's mean,
// which keeps the sums small and the covariance free of cancellation), giving
//   mu = mean(x),  Sigma = (sum (x - mu)(x - mu)^T) / (N - 1)     (np.cov, as pytorch-fid)
// Distance:
//   FID = |mu1 - mu2|^2 + tr Sigma1 + tr Sigma2 - 2 tr sqrt(Sigma1 Sigma2)
// The trace term uses no matrix square root: with Sigma1 = A A^T (A from a pivoted Cholesky, which
// also handles a singular Sigma1, e.g. N < 2048), Sigma1 Sigma2 = A A^T Sigma2 has the same non-zero
// eigenvalues as the symmetric PSD matrix M = A^T Sigma2 A, so
//   tr sqrt(Sigma1 Sigma2) = sum_i sqrt(max(lambda_i(M), 0))
// with lambda(M) from our symmetric eigensolver in f64 (Householder tridiagonalisation, then
// Sturm-sequence bisection); tiny negative eigenvalues (rounding) are clamped to 0. This equals
// scipy.linalg.sqrtm's trace whenever sqrtm is well defined, and stays real where sqrtm would
// return tiny imaginary parts.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "aurora/inception.h"
#include "io/dataset.h"
#include "tensor/tensor.h"

namespace engine::aurora {

// How images reach 299x299 (both bilinear, no antialiasing; at 64x64 it is an upsample):
//   pytorch_fid: v = u8 / 255, F.interpolate(v, 299, bilinear, align_corners=False) (half-pixel
//                centres: src = (dst + 0.5) in/out - 0.5, clamped at 0), then 2 v - 1. The default.
//   tf1:         TF1's resize_bilinear without half-pixel centres, as torch-fidelity, torchmetrics
//                and the NVlabs TorchScript Inception do: src = dst in/out, lo = floor(src),
//                hi = min(lo + 1, in - 1), on the 0..255 values, then (v - 128) / 128.
// The two give FIDs that differ by a few tenths; only compare numbers computed the same way.
enum class FidResize { pytorch_fid, tf1 };
FidResize parse_fid_resize(const std::string& name);  // "pytorch-fid" | "tf1"
const char* fid_resize_name(FidResize r);

// u8 [N, 3, H, W] -> the network's input f32 [N, 3, size, size] in [-1, 1].
Tensor inception_input(const Tensor& images_u8, FidResize resize = FidResize::pytorch_fid, int64_t size = 299);
// Generator output f32 [N, 3, H, W] in [-1, 1] -> u8 [N, 3, H, W]: trunc(clamp(x 127.5 + 128, 0, 255)).
Tensor quantize_images(const Tensor& images);
// A dataset image u8 [H, W, 3] -> u8 [3, R, R]: centre crop to a square, resize with the data
// loader's filter (io::resize_image, automatic), as the training data is prepared.
Tensor prepare_real_image(const Tensor& image_hwc, int64_t resolution);

// Mean and covariance of a feature set (f64).
struct FidStatistics {
  Tensor mu;     // f64 [d]
  Tensor sigma;  // f64 [d, d], unbiased (N - 1)
  int64_t n = 0;
};

// Streaming f64 sums of feature batches (features arrive in batches of any size).
class FidAccumulator {
 public:
  explicit FidAccumulator(int64_t dim = FidInception::kFeatureDim);
  void add(const Tensor& features);  // [B, d], f32 or f64
  int64_t count() const { return n_; }
  FidStatistics finish() const;  // needs count() >= 2

 private:
  int64_t dim_, n_ = 0;
  std::vector<double> shift_, sum_, outer_;  // outer_: sum of (x - shift)(x - shift)^T, row-major
};

struct FrechetTerms {
  double mean_term = 0;   // |mu1 - mu2|^2
  double trace1 = 0, trace2 = 0;
  double cross_trace = 0;  // tr sqrt(Sigma1 Sigma2)
  double fid() const { return mean_term + trace1 + trace2 - 2 * cross_trace; }
};
FrechetTerms frechet_terms(const FidStatistics& a, const FidStatistics& b);
double frechet_distance(const FidStatistics& a, const FidStatistics& b);

// Linear algebra behind the trace term, exposed for tests (row-major n x n f64, symmetric; the
// eigensolver reads only the lower triangle).
// Eigenvalues in ascending order (Householder tridiagonalisation + bisection).
std::vector<double> symmetric_eigenvalues(std::vector<double> a, int64_t n);
// sum_i sqrt(max(lambda_i(S1 S2), 0)) for symmetric PSD S1, S2.
double trace_sqrt_product(const std::vector<double>& s1, const std::vector<double>& s2, int64_t n);

// Statistics files (safetensors: mu, sigma f64; metadata: n, dim and whatever the caller keys the
// cache with: dataset spec, resolution, resize, weights hash).
void save_fid_statistics(const std::string& path, const FidStatistics& s,
                         const std::map<std::string, std::string>& metadata);
// Loads `path` and checks that every entry of `expected` is in its metadata with that value; a
// mismatch is an error naming the key and both values.
FidStatistics load_fid_statistics(const std::string& path, const std::map<std::string, std::string>& expected = {});

// FNV-1a 64 of a file's bytes, as 16 hex digits (keys cached statistics to the exact weights).
std::string file_hash(const std::string& path);

struct FidOptions {
  std::string weights;          // the converted Inception weights (aurora/tools/convert_fid_inception.py)
  FidResize resize = FidResize::pytorch_fid;
  int64_t batch_size = 32;      // images per Inception forward
  std::string cache_dir;        // real statistics are cached here; empty: no cache
  bool verbose = true;          // progress lines on stderr
};

// The FID service the CLI and the trainer share (the stage switch goes through StageFid below;
// docs/evaluation.md).
class FidEvaluator {
 public:
  // Draws `count` generated images starting at global sample index `first`: f32 [count, 3, R, R]
  // in [-1, 1] (the generator's output; the caller picks z and captions from `first`).
  using SampleFn = std::function<Tensor(int64_t first, int64_t count)>;

  explicit FidEvaluator(FidOptions options);  // loads the weights (error says how to make them)

  // Statistics of n generated images.
  FidStatistics generator_statistics(const SampleFn& sample, int64_t n);
  // Statistics of the dataset images at `indices`, prepared at `resolution`; cached under
  // cache_dir keyed by (spec, resolution, the indices' rule `subset`, n, resize, weights hash).
  FidStatistics dataset_statistics(const io::Dataset& data, const std::string& spec, int64_t resolution,
                                   const std::vector<int64_t>& indices, const std::string& subset);
  // The first n images (indices 0..n-1) of a dataset.
  FidStatistics dataset_statistics(const io::Dataset& data, const std::string& spec, int64_t resolution, int64_t n);

  // FID of n generated images against n real ones (the real statistics cached).
  double fid_of_generator(const SampleFn& sample, const io::Dataset& real, const std::string& spec,
                          int64_t resolution, int64_t n);
  // Spec section 9: the FID between two disjoint real sets at `resolution`, the floor the
  // generator can reach. One dataset: its even and odd indices (n each; needs 2n images).
  double reference_fid(const io::Dataset& data, const std::string& spec, int64_t resolution, int64_t n);
  // Two datasets: the first n of each.
  double reference_fid(const io::Dataset& a, const std::string& spec_a, const io::Dataset& b,
                       const std::string& spec_b, int64_t resolution, int64_t n);

  const FidInception& network() const { return *net_; }
  const std::string& weights_hash() const { return weights_hash_; }
  const FidOptions& options() const { return options_; }

 private:
  Tensor features_u8(const Tensor& images_u8) const;  // u8 [B, 3, H, W] -> [B, 2048]
  void progress(const char* what, int64_t done, int64_t total, double seconds) const;

  FidOptions options_;
  std::unique_ptr<FidInception> net_;
  std::string weights_hash_;
};

// The two FIDs of the reference-FID stage switch (docs/aurora-spec.md section 9). The trainer owns
// the rule (aurora::ReferenceFidRule in aurora/trainer.h: grow once the generator's FID at the
// stage resolution reaches the reference times a tolerance, checked every check_kimg); it takes
// two callbacks double(int64_t resolution), which this class provides:
//   reference(r)            FID between two disjoint real sets at resolution r: the dataset's even
//                           and odd images, n each (computed once per r; real statistics cached
//                           on disk, so a resumed run does not recompute them)
//   generator(sample, r)    FID of n generated images at r against the even half (the same real
//                           statistics, the same n: both numbers carry the same small-n bias)
// Generated images should be conditioned on captions(first, count): the captions of the even
// half, in order, so fakes and reals describe the same things. Every value is recorded in
// history() (for the metrics log).
class StageFid {
 public:
  struct Record {
    std::string kind;  // "reference" or "generator"
    int64_t resolution = 0, n = 0;
    double fid = 0;
    std::string to_json() const;  // {"fid_kind":..,"resolution":..,"n":..,"fid":..}
  };

  StageFid(FidEvaluator& evaluator, std::shared_ptr<const io::Dataset> data, std::string spec, int64_t n);
  double reference(int64_t resolution);
  double generator(const FidEvaluator::SampleFn& sample, int64_t resolution);
  // Captions of even-half images first .. first+count-1 (wrapping around after n).
  std::vector<std::string> captions(int64_t first, int64_t count) const;
  const std::vector<Record>& history() const { return history_; }
  int64_t n() const { return n_; }

 private:
  std::vector<int64_t> even_indices() const;

  FidEvaluator& evaluator_;
  std::shared_ptr<const io::Dataset> data_;
  std::string spec_;
  int64_t n_;
  std::map<int64_t, double> reference_;
  std::vector<Record> history_;
};

}  // namespace engine::aurora
