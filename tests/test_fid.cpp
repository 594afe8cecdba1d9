// Tests of aurora/fid (FID preprocessing, statistics, Frechet distance, evaluator):
//   * resize + quantisation vs tests/parity/ref_fid.py: the pytorch-fid pipeline (torch
//     F.interpolate bilinear, align_corners=False, on u8/255, then 2x-1) to f32 rounding (max abs
//     error <= 4e-7 on values in [-1, 1]), and the TF1 convention against a float64 NumPy version
//     of its formula (<= 2e-6); up- and downsampling, square and not;
//   * quantize_images on hand-computed values (NVlabs: trunc(clamp(x*127.5+128)));
//   * statistics accumulated in batches of uneven sizes vs np.mean / np.cov (1e-10 relative);
//   * the Frechet distance vs pytorch-fid's float64 computation with scipy.linalg.sqrtm to 1e-6
//     relative: full-rank, near-singular (N < d: rank-deficient covariance) and identical sets;
//   * the eigensolver vs numpy.linalg.eigvalsh (indefinite matrix), hand-computed traces;
//   * statistics files, cache reuse and errors of the evaluator on a random-weight network.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "aurora/fid.h"
#include "io/safetensors.h"
#include "tensor/ops.h"
#include "tests/parity/script_runner.h"

using namespace engine;
using namespace engine::aurora;

namespace {

double max_abs_diff(const Tensor& a, const Tensor& b) {
  const std::vector<double> x = a.to_vector(), y = b.to_vector();
  REQUIRE(x.size() == y.size());
  double m = 0;
  for (size_t i = 0; i < x.size(); ++i) m = std::max(m, std::fabs(x[i] - y[i]));
  return m;
}

double max_abs(const Tensor& a) {
  double m = 0;
  for (double v : a.to_vector()) m = std::max(m, std::fabs(v));
  return m;
}

Tensor random_u8(const Dims& shape, Generator& g) {
  return to_dtype(mul(rand(shape, g, opts(DType::f64)), 255.999).to(DType::f64), DType::u8);
}

// Correlated features with a large common offset: x = z A + offset, z ~ N(0, 1) [n, k], A [k, d].
Tensor features(int64_t n, int64_t d, int64_t k, double offset, Generator& g) {
  const Tensor z = randn({n, k}, g, opts(DType::f64));
  const Tensor a = mul(randn({k, d}, g, opts(DType::f64)), 1.0 / std::sqrt(double(k)));
  return add(add(matmul(z, a), mul(randn({n, d}, g, opts(DType::f64)), 0.05)), offset);
}

}  // namespace

TEST_CASE("fid: resize and quantisation match the references pixel for pixel") {
  Generator g(11);
  const io::NamedTensors batches = {{"up64", random_u8({3, 3, 64, 64}, g)},
                                    {"rect", random_u8({1, 3, 37, 53}, g)},
                                    {"down", random_u8({1, 3, 400, 320}, g)}};
  const std::string dir = parity::make_tmpdir("fid_resize");
  io::save_safetensors(dir + "/resize.in.safetensors", batches, {{"size", "299"}});
  if (!parity::run_script("ref_fid.py", dir, {"resize"})) return;
  const auto ref = io::load_safetensors(dir + "/resize.out.safetensors");
  for (const auto& [name, images] : batches) {
    const Tensor ours = inception_input(images, FidResize::pytorch_fid);
    CHECK(ours.sizes() == Dims{images.size(0), 3, 299, 299});
    const double e = max_abs_diff(ours, ref.at("pytorch_fid." + name));
    MESSAGE(name << ": pytorch-fid resize max |ours - torch| = " << e);
    CHECK(e <= 4e-7);
    const double e_tf = max_abs_diff(inception_input(images, FidResize::tf1), ref.at("tf1." + name));
    MESSAGE(name << ": tf1 resize max |ours - numpy f64| = " << e_tf);
    CHECK(e_tf <= 2e-6);
  }
  // The two conventions really differ (half-pixel centres): otherwise the test above proves little.
  CHECK(max_abs_diff(inception_input(batches[0].second, FidResize::pytorch_fid),
                     inception_input(batches[0].second, FidResize::tf1)) > 0.05);
  std::filesystem::remove_all(dir);
}

TEST_CASE("fid: quantize_images") {
  const Tensor x = from_vector({-1.0, 1.0, 0.0, -0.5, 2.0, -3.0, 0.999, NAN}, {1, 1, 1, 8}, opts(DType::f32))
                       .expand({1, 3, 1, 8});
  const std::vector<double> q = quantize_images(x).to_vector();
  const std::vector<double> want = {0, 255, 128, 64, 255, 0, 255, 0};  // 0.999*127.5+128 = 255.37
  for (int c = 0; c < 3; ++c)
    for (int i = 0; i < 8; ++i) CHECK(q[size_t(c * 8 + i)] == want[size_t(i)]);
}

TEST_CASE("fid: statistics and Frechet distance match NumPy/SciPy (float64)") {
  Generator g(5);
  struct Case {
    std::string name;
    Tensor f1, f2;
  };
  std::vector<Case> cases;
  cases.push_back({"full", features(500, 64, 64, 3.0, g), features(400, 64, 64, 3.2, g)});
  // N1 = 40 < d = 64: sigma1 has rank 39 (near-singular), the case where sqrtm is fragile.
  cases.push_back({"singular", features(40, 64, 64, 5.0, g), features(300, 64, 64, 5.0, g)});
  // Low-rank structure in both: k = 20 latent factors plus small noise.
  cases.push_back({"lowrank", features(300, 128, 20, -2.0, g), features(250, 128, 20, -2.1, g)});
  cases.push_back({"big", features(700, 256, 256, 1.0, g), features(600, 256, 256, 1.1, g)});
  const Tensor same = features(200, 32, 32, 0.5, g);
  cases.push_back({"identical", same, same});
  io::NamedTensors in;
  std::string names;
  for (const Case& c : cases) {
    in.emplace_back(c.name + ".f1", c.f1);
    in.emplace_back(c.name + ".f2", c.f2);
    names += (names.empty() ? "" : ",") + c.name;
  }
  const std::string dir = parity::make_tmpdir("fid_frechet");
  io::save_safetensors(dir + "/frechet.in.safetensors", in, {{"cases", names}});
  if (!parity::run_script("ref_fid.py", dir, {"frechet"})) return;
  const auto ref = io::load_safetensors(dir + "/frechet.out.safetensors");
  for (const Case& c : cases) {
    // Stream in uneven batches (1, 7, 13, ...) as the evaluator would.
    auto stats = [](const Tensor& f) {
      FidAccumulator acc(f.size(1));
      int64_t pos = 0, step = 1;
      while (pos < f.size(0)) {
        const int64_t len = std::min(step, f.size(0) - pos);
        acc.add(narrow(f, 0, pos, len));
        pos += len;
        step += 6;
      }
      return acc.finish();
    };
    const FidStatistics s1 = stats(c.f1), s2 = stats(c.f2);
    CHECK(s1.n == c.f1.size(0));
    CHECK(max_abs_diff(s1.mu, ref.at(c.name + ".mu1")) <= 1e-10 * max_abs(ref.at(c.name + ".mu1")));
    CHECK(max_abs_diff(s1.sigma, ref.at(c.name + ".sigma1")) <= 1e-10 * max_abs(ref.at(c.name + ".sigma1")));
    CHECK(max_abs_diff(s2.sigma, ref.at(c.name + ".sigma2")) <= 1e-10 * max_abs(ref.at(c.name + ".sigma2")));
    const double want = ref.at(c.name + ".fid").item();
    const FrechetTerms t = frechet_terms(s1, s2);
    const double got = t.fid();
    const double scale = t.trace1 + t.trace2;  // the size of the terms that cancel
    MESSAGE(c.name << ": FID ours " << got << " scipy " << want << " (|diff| / (tr S1 + tr S2) = "
                   << std::fabs(got - want) / scale << ")");
    if (c.name == "identical") {
      // FID of a set with itself is 0 up to rounding of the terms (scipy gets the same).
      CHECK(std::fabs(got) <= 1e-9 * scale);
      CHECK(std::fabs(want) <= 1e-6 * scale);
    } else {
      CHECK(std::fabs(got - want) <= 1e-6 * std::fabs(want));
    }
    // Computed from scipy's own mu and sigma, too (isolates the distance from the statistics).
    FidStatistics r1{ref.at(c.name + ".mu1"), ref.at(c.name + ".sigma1"), s1.n};
    FidStatistics r2{ref.at(c.name + ".mu2"), ref.at(c.name + ".sigma2"), s2.n};
    if (c.name != "identical") CHECK(std::fabs(frechet_distance(r1, r2) - want) <= 1e-6 * std::fabs(want));
  }
  std::filesystem::remove_all(dir);
}

TEST_CASE("fid: symmetric eigensolver") {
  Generator g(9);
  const int64_t n = 120;
  const Tensor b = randn({n, n}, g, opts(DType::f64));
  const Tensor a = contiguous(mul(add(b, transpose(b, 0, 1)), 0.5));  // indefinite
  const std::string dir = parity::make_tmpdir("fid_eigh");
  io::save_safetensors(dir + "/eigh.in.safetensors", {{"a", a}});
  if (!parity::run_script("ref_fid.py", dir, {"eigh"})) return;
  const Tensor want = io::load_safetensors(dir + "/eigh.out.safetensors").at("w");
  const std::vector<double> w = symmetric_eigenvalues(a.to_vector(), n);
  const Tensor got = from_vector(w, {n}, opts(DType::f64));
  CHECK(max_abs_diff(got, want) <= 1e-11 * max_abs(want));
  std::filesystem::remove_all(dir);

  // Hand-checked traces: S1 = S2 = diag(l) -> tr sqrt(S1 S2) = sum l; S1 = 0 -> 0;
  // S1 = diag(1, 4), S2 = [[2, 1], [1, 2]]: eig(S1 S2) of [[2, 1], [4, 8]] = 5 +- sqrt(13).
  const std::vector<double> d = {3, 0, 0, 0, 1, 0, 0, 0, 0.5};
  CHECK(trace_sqrt_product(d, d, 3) == doctest::Approx(4.5).epsilon(1e-14));
  CHECK(trace_sqrt_product(std::vector<double>(9, 0.0), d, 3) == 0.0);
  const double want2 = std::sqrt(5 + std::sqrt(13.0)) + std::sqrt(5 - std::sqrt(13.0));
  CHECK(trace_sqrt_product({1, 0, 0, 4}, {2, 1, 1, 2}, 2) == doctest::Approx(want2).epsilon(1e-14));
  CHECK(symmetric_eigenvalues({}, 0).empty());
  const std::vector<double> one = symmetric_eigenvalues({7}, 1);
  REQUIRE(one.size() == 1);
  CHECK(one[0] == doctest::Approx(7.0).epsilon(1e-14));
}

TEST_CASE("fid: statistics files") {
  Generator g(2);
  FidAccumulator acc(8);
  acc.add(randn({20, 8}, g));
  const FidStatistics s = acc.finish();
  const std::string dir = parity::make_tmpdir("fid_stats");
  save_fid_statistics(dir + "/s.safetensors", s, {{"dataset", "emoji"}, {"resolution", "16"}});
  const FidStatistics r = load_fid_statistics(dir + "/s.safetensors", {{"dataset", "emoji"}});
  CHECK(r.n == 20);
  CHECK(max_abs_diff(r.sigma, s.sigma) == 0.0);
  CHECK_THROWS_WITH_AS(load_fid_statistics(dir + "/s.safetensors", {{"resolution", "32"}}),
                       doctest::Contains("metadata 'resolution' is '16', expected '32'"), Error);
  FidAccumulator one(8);
  one.add(randn({1, 8}, g));
  CHECK_THROWS_WITH_AS(one.finish(), doctest::Contains("at least 2"), Error);
  CHECK_THROWS_WITH_AS(one.add(randn({2, 7}, g)), doctest::Contains("expected features [B, 8]"), Error);
  std::filesystem::remove_all(dir);
}

namespace {

// A map-style dataset of random images (the io::Dataset contract), for the evaluator.
class RandomImages : public io::Dataset {
 public:
  RandomImages(size_t n, int64_t h, int64_t w) {
    Generator g(77);
    for (size_t i = 0; i < n; ++i) images_.push_back(random_u8({h, w, 3}, g));
  }
  size_t size() const override { return images_.size(); }
  io::RawSample get(size_t i) const override {
    return {images_.at(i), "image " + std::to_string(i), std::to_string(i)};
  }
  std::string describe() const override { return "random images"; }

 private:
  std::vector<Tensor> images_;
};

}  // namespace

TEST_CASE("fid: evaluator (random-weight network): reference FID, cache, generator FID, errors") {
  const std::string dir = parity::make_tmpdir("fid_eval");
  {
    Generator g(1);
    io::NamedTensors w;
    for (const auto& [name, shape] : FidInception::parameter_shapes()) {
      const bool var = name.find("running_var") != std::string::npos || name.find("bn.weight") != std::string::npos;
      const double fan = shape.size() == 4 ? double(shape[1] * shape[2] * shape[3]) : 2048.0;
      w.emplace_back(name, var ? add(rand(shape, g), 0.5) : mul(randn(shape, g), std::sqrt(2.0 / fan)));
    }
    io::save_safetensors(dir + "/inception.safetensors", w);
  }
  FidOptions o;
  o.weights = dir + "/missing.safetensors";
  const std::string missing = "FID Inception weights not found: '" + o.weights + "'";
  CHECK_THROWS_WITH_AS(FidEvaluator{o}, doctest::Contains(missing.c_str()), Error);
  o.weights = dir + "/inception.safetensors";
  o.batch_size = 3;
  o.cache_dir = dir + "/cache";
  o.verbose = false;
  FidEvaluator fid(o);
  CHECK(fid.weights_hash() == file_hash(o.weights));
  CHECK(fid.weights_hash().size() == 16);
  const RandomImages data(6, 40, 48);  // cropped to 40x40, resized to 32, then to 299
  CHECK_THROWS_WITH_AS(fid.reference_fid(data, "random", 32, 4), doctest::Contains("use --n 3 or less"), Error);
  const auto t0 = std::chrono::steady_clock::now();
  const double ref = fid.reference_fid(data, "random", 32, 3);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  MESSAGE("reference FID of 2 x 3 random images: " << ref << " (" << 6 / s << " images/s incl. statistics)");
  CHECK(std::isfinite(ref));
  CHECK(ref > 0);
  size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(o.cache_dir)) files += e.is_regular_file();
  CHECK(files == 2);  // the even and the odd half
  // Cached: the same value without recomputation; the even half's statistics equal a direct
  // computation over images 0, 2, 4.
  CHECK(fid.reference_fid(data, "random", 32, 3) == ref);
  FidAccumulator acc;
  for (int i = 0; i < 6; i += 2) {
    const Tensor img = unsqueeze(prepare_real_image(data.get(size_t(i)).image, 32), 0);
    acc.add(fid.network().features(inception_input(img)));
  }
  const FidStatistics even = fid.dataset_statistics(data, "random", 32, {0, 2, 4}, "even");
  CHECK(max_abs_diff(even.mu, acc.finish().mu) <= 1e-6 * max_abs(even.mu));

  // A "generator" that returns dataset images 1, 3, 5 as f32 in [-1, 1] that quantise back to
  // the same bytes, so its FID against the odd half must be 0 up to rounding.
  auto sample = [&](int64_t first, int64_t count) {
    TensorList xs;
    for (int64_t i = first; i < first + count; ++i) {
      const Tensor u8 = prepare_real_image(data.get(size_t(2 * i + 1)).image, 32);
      // x = (u8 + 0.5 - 128) / 127.5: the middle of the bin that the truncating quantiser maps to u8.
      xs.push_back(div(sub(to_dtype(u8, DType::f32), 127.5), 127.5));
    }
    return stack(xs, 0);
  };
  const FidStatistics gen = fid.generator_statistics(sample, 3);
  const FidStatistics odd = fid.dataset_statistics(data, "random", 32, {1, 3, 5}, "odd");
  const FrechetTerms t = frechet_terms(gen, odd);
  CHECK(std::fabs(t.fid()) <= 1e-7 * (t.trace1 + t.trace2));

  // The stage switch's two FIDs: the reference comes from the cache above (same spec, resolution,
  // n); a generator that reproduces the even half has FID ~ 0, a grey one a large FID.
  auto shared = std::make_shared<RandomImages>(6, 40, 48);
  StageFid stage(fid, shared, "random", 3);
  CHECK(stage.reference(32) == ref);
  auto even_images = [&](int64_t first, int64_t count) {
    TensorList xs;
    for (int64_t i = first; i < first + count; ++i) {
      const Tensor u8 = prepare_real_image(shared->get(size_t(2 * i)).image, 32);
      xs.push_back(div(sub(to_dtype(u8, DType::f32), 127.5), 127.5));
    }
    return stack(xs, 0);
  };
  const double same_fid = stage.generator(even_images, 32);
  CHECK(std::fabs(same_fid) <= 1e-7 * ref);
  auto grey = [](int64_t, int64_t count) { return zeros({count, 3, 32, 32}); };
  const double grey_fid = stage.generator(grey, 32);
  MESSAGE("stage FIDs: reference " << ref << ", even half as generator " << same_fid << ", grey " << grey_fid);
  CHECK(grey_fid > 10 * ref);
  REQUIRE(stage.history().size() == 3);
  CHECK(stage.history()[0].kind == "reference");
  CHECK(stage.history()[2].to_json().find("\"fid_kind\":\"generator\",\"resolution\":32,\"n\":3") !=
        std::string::npos);
  CHECK(stage.captions(0, 2) == std::vector<std::string>{"image 0", "image 2"});
  CHECK(stage.captions(4, 1) == std::vector<std::string>{"image 2"});  // wraps: even image 4 % 3 = 1
  CHECK_THROWS_WITH_AS(StageFid(fid, shared, "random", 4), doctest::Contains("need 8, but 'random' has 6"), Error);
  std::filesystem::remove_all(dir);
}
