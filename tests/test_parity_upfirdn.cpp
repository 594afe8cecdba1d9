// PyTorch parity of upfirdn2d (tensor/ops_upfirdn.cpp): forward, first gradient and double backward
// with respect to x against tests/parity/ref_upfirdn.py, whose reference is StyleGAN2's upfirdn2d
// written with plain PyTorch ops (parity_lib.upfirdn2d_ref). The filter is a constant.
// Scheme and tolerances: tests/parity/parity.h and docs/testing.md.
#include "tests/parity/parity.h"

using namespace engine;
using parity::CaseFn;

namespace {

parity::Reference& ref() {
  static parity::Reference r("ref_upfirdn.py");
  return r;
}

// up (x, y), down (x, y), pad (x0, x1, y0, y1), gain: the argument order of upfirdn2d_ref.
UpFirDnParams params(int64_t upx, int64_t upy, int64_t downx, int64_t downy, int64_t px0, int64_t px1, int64_t py0,
                     int64_t py1, double gain = 1.0) {
  UpFirDnParams p;
  p.up_x = upx;
  p.up_y = upy;
  p.down_x = downx;
  p.down_y = downy;
  p.pad_x0 = px0;
  p.pad_x1 = px1;
  p.pad_y0 = py0;
  p.pad_y1 = py1;
  p.gain = gain;
  return p;
}

CaseFn fir(UpFirDnParams p) {
  return [p](const TensorList& x) { return TensorList{upfirdn2d(x[0], x[1], p)}; };
}

}  // namespace

TEST_CASE("parity upfirdn2d: StyleGAN2 downsample2d and upsample2d") {
  ref().run("down2.sg2", fir(params(1, 1, 2, 2, 1, 1, 1, 1)));
  ref().run("up2.sg2", fir(params(2, 2, 1, 1, 2, 1, 2, 1, 4.0)));
  ref().run("f64.down2.sg2", fir(params(1, 1, 2, 2, 1, 1, 1, 1)));
}

TEST_CASE("parity upfirdn2d: non-symmetric filters, anisotropic factors, cropping, gain") {
  ref().run("fir2d.gain", fir(params(1, 1, 1, 1, 1, 2, 1, 1, 2.0)));
  ref().run("aniso", fir(params(2, 1, 1, 2, 1, 2, 0, 1)));
  ref().run("crop.fir1d", fir(params(1, 1, 1, 1, -1, 0, 0, -2, 3.0)));
  ref().run("up2down3", fir(params(2, 2, 3, 3, 2, 2, 1, 2)));
  ref().run("f64", fir(params(2, 2, 1, 1, 1, 1, 2, 0, 1.5)));
}

TEST_CASE("parity upfirdn2d: non-contiguous input") {
  ref().run("down2.transposed", [](const TensorList& x) {
    return TensorList{upfirdn2d(transpose(x[0], 2, 3), x[1], params(1, 1, 2, 2, 1, 1, 1, 1))};
  });
}

TEST_CASE("parity upfirdn2d: every reference case was compared") { ref().check_all_run(); }
