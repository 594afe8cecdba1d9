// image.cpp: see image.h. Thin, defensive wrappers around stb_image, stb_image_write and
// stb_image_resize; the implementations are compiled into Debian's libstb.so, which engine_io
// links (top-level CMakeLists.txt), so this file only includes the declarations.
#include "io/image.h"

#include <stb/stb_image.h>
#include <stb/stb_image_resize.h>
#include <stb/stb_image_write.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>

#include "io/atomic_file.h"
#include "tensor/error.h"

namespace engine::io {
namespace {

// Validate a u8 [H, W, C] image and return it contiguous on the CPU, so stb can take raw pointers.
Tensor checked_image(const Tensor& image, const char* op) {
  ENGINE_CHECK(image.defined(), "{}: undefined image tensor", op);
  ENGINE_CHECK(image.dtype() == DType::u8, "{}: expected a u8 [H, W, C] image, got dtype {}", op,
               dtype_name(image.dtype()));
  ENGINE_CHECK(image.dim() == 3, "{}: expected a u8 [H, W, C] image, got shape {}", op, image.sizes().str());
  const int64_t h = image.sizes()[0], w = image.sizes()[1], c = image.sizes()[2];
  ENGINE_CHECK(c >= 1 && c <= 4, "{}: expected 1 to 4 channels, got shape {}", op, image.sizes().str());
  // stb takes int sizes and strides; refuse what would overflow them instead of corrupting memory.
  ENGINE_CHECK(h >= 1 && w >= 1 && h <= INT_MAX / 4 && w <= INT_MAX / (4 * 4) && h * w * c <= INT_MAX,
               "{}: image shape {} is empty or too large", op, image.sizes().str());
  Tensor t = image.device().is_cpu() ? image : image.to(Device::cpu());
  return t.contiguous();
}

std::string read_file_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  ENGINE_CHECK(f.is_open(), "read_image: cannot open '{}': {}", path, std::strerror(errno));
  std::ostringstream ss;
  ss << f.rdbuf();
  ENGINE_CHECK(!f.bad(), "read_image: error reading '{}'", path);
  return ss.str();
}

// stb_image_write's callback: append the produced bytes to a std::string.
void append_to_string(void* context, void* data, int size) {
  static_cast<std::string*>(context)->append(static_cast<const char*>(data), size_t(size));
}

stbir_filter stb_filter(ResizeFilter f) {
  switch (f) {
    case ResizeFilter::automatic: return STBIR_FILTER_DEFAULT;
    case ResizeFilter::box: return STBIR_FILTER_BOX;
    case ResizeFilter::triangle: return STBIR_FILTER_TRIANGLE;
    case ResizeFilter::cubic_bspline: return STBIR_FILTER_CUBICBSPLINE;
    case ResizeFilter::catmull_rom: return STBIR_FILTER_CATMULLROM;
    case ResizeFilter::mitchell: return STBIR_FILTER_MITCHELL;
  }
  return STBIR_FILTER_DEFAULT;
}

uint8_t float_to_byte(float x) {
  // NaN maps to 0 (the comparison chain below is false for NaN) rather than undefined behaviour.
  float v = (x + 1.0f) * 127.5f;
  if (!(v > 0.0f)) return 0;
  if (v >= 255.0f) return 255;
  return uint8_t(std::lround(v));
}

}  // namespace

Tensor decode_image(const void* data, size_t size, const std::string& source, int channels) {
  ENGINE_CHECK(channels >= 0 && channels <= 4, "decode_image: '{}': channels must be 0..4, got {}", source,
               channels);
  ENGINE_CHECK(data != nullptr && size > 0, "decode_image: '{}': empty input", source);
  ENGINE_CHECK(size <= size_t(INT_MAX), "decode_image: '{}': {} bytes is more than stb can read", source, size);
  int w = 0, h = 0, file_channels = 0;
  std::unique_ptr<stbi_uc, void (*)(void*)> pixels(
      stbi_load_from_memory(static_cast<const stbi_uc*>(data), int(size), &w, &h, &file_channels, channels),
      stbi_image_free);
  if (!pixels) {
    const char* reason = stbi_failure_reason();
    throw Error(fmt::format("decode_image: cannot decode '{}': {}", source, reason ? reason : "unknown error"));
  }
  const int c = channels == 0 ? file_channels : channels;
  ENGINE_CHECK(w > 0 && h > 0 && c >= 1 && c <= 4, "decode_image: '{}': bad decoded geometry {}x{}x{}", source, h,
               w, c);
  Tensor out = empty({h, w, c}, opts(DType::u8));
  std::memcpy(out.data<uint8_t>(), pixels.get(), size_t(h) * size_t(w) * size_t(c));
  return out;
}

Tensor read_image(const std::string& path, int channels) {
  const std::string bytes = read_file_bytes(path);
  return decode_image(bytes.data(), bytes.size(), path, channels);
}

Tensor to_float(const Tensor& image) {
  const Tensor src = checked_image(image, "to_float");
  const int64_t h = src.sizes()[0], w = src.sizes()[1], c = src.sizes()[2];
  Tensor out = empty({c, h, w}, opts(DType::f32));
  const uint8_t* in = src.data<uint8_t>();
  float* o = out.data<float>();
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x)
      for (int64_t k = 0; k < c; ++k) o[(k * h + y) * w + x] = float(in[(y * w + x) * c + k]) / 127.5f - 1.0f;
  return out;
}

Tensor to_u8(const Tensor& chw) {
  ENGINE_CHECK(chw.defined() && chw.dim() == 3, "to_u8: expected a [C, H, W] tensor, got shape {}",
               chw.defined() ? chw.sizes().str() : std::string("undefined"));
  const int64_t c = chw.sizes()[0], h = chw.sizes()[1], w = chw.sizes()[2];
  ENGINE_CHECK(c >= 1 && c <= 4, "to_u8: expected 1 to 4 channels, got shape {}", chw.sizes().str());
  Tensor src = chw.detach().to(Device::cpu()).to(DType::f32).contiguous();
  Tensor out = empty({h, w, c}, opts(DType::u8));
  const float* in = src.data<float>();
  uint8_t* o = out.data<uint8_t>();
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x)
      for (int64_t k = 0; k < c; ++k) o[(y * w + x) * c + k] = float_to_byte(in[(k * h + y) * w + x]);
  return out;
}

std::string encode_png(const Tensor& image) {
  const Tensor src = checked_image(image, "encode_png");
  const int h = int(src.sizes()[0]), w = int(src.sizes()[1]), c = int(src.sizes()[2]);
  std::string bytes;
  const int ok = stbi_write_png_to_func(append_to_string, &bytes, w, h, c, src.data<uint8_t>(), w * c);
  ENGINE_CHECK(ok != 0 && !bytes.empty(), "encode_png: stb failed to encode a {} image", src.sizes().str());
  return bytes;
}

void write_png(const std::string& path, const Tensor& image) {
  // Encode first, so a bad image throws before anything touches the file system.
  write_file_atomically(path, encode_png(image));
}

std::string encode_jpeg(const Tensor& image, int quality) {
  ENGINE_CHECK(quality >= 1 && quality <= 100, "encode_jpeg: quality must be 1..100, got {}", quality);
  const Tensor src = checked_image(image, "encode_jpeg");
  const int h = int(src.sizes()[0]), w = int(src.sizes()[1]), c = int(src.sizes()[2]);
  std::string bytes;
  const int ok = stbi_write_jpg_to_func(append_to_string, &bytes, w, h, c, src.data<uint8_t>(), quality);
  ENGINE_CHECK(ok != 0 && !bytes.empty(), "encode_jpeg: stb failed to encode a {} image", src.sizes().str());
  return bytes;
}

Tensor center_crop_square(const Tensor& image) {
  const Tensor src = checked_image(image, "center_crop_square");
  const int64_t h = src.sizes()[0], w = src.sizes()[1];
  const int64_t side = std::min(h, w);
  return src.narrow(0, (h - side) / 2, side).narrow(1, (w - side) / 2, side).contiguous();
}

Tensor resize_image(const Tensor& image, int64_t out_h, int64_t out_w, ResizeFilter filter) {
  const Tensor src = checked_image(image, "resize_image");
  const int64_t h = src.sizes()[0], w = src.sizes()[1], c = src.sizes()[2];
  ENGINE_CHECK(out_h >= 1 && out_w >= 1 && out_h <= INT_MAX / 4 && out_w <= INT_MAX / 16 &&
                   out_h * out_w * c <= INT_MAX,
               "resize_image: bad output size {}x{}", out_h, out_w);
  if (out_h == h && out_w == w && filter == ResizeFilter::automatic) return src.contiguous();
  Tensor out = empty({out_h, out_w, c}, opts(DType::u8));
  // Grey+alpha and RGBA: the last channel is alpha; flags 0 lets stb premultiply internally.
  const int alpha = (c == 2 || c == 4) ? int(c - 1) : STBIR_ALPHA_CHANNEL_NONE;
  const int ok = stbir_resize_uint8_generic(src.data<uint8_t>(), int(w), int(h), int(w * c), out.data<uint8_t>(),
                                            int(out_w), int(out_h), int(out_w * c), int(c), alpha, 0,
                                            STBIR_EDGE_REFLECT, stb_filter(filter), STBIR_COLORSPACE_LINEAR,
                                            nullptr);
  ENGINE_CHECK(ok != 0, "resize_image: stb failed to resize {} to {}x{}", src.sizes().str(), out_h, out_w);
  return out;
}

Tensor make_grid(const Tensor& images, int64_t nrow, int64_t padding, uint8_t pad_value) {
  ENGINE_CHECK(images.defined() && images.dim() == 4, "make_grid: expected images [N, C, H, W], got shape {}",
               images.defined() ? images.sizes().str() : std::string("undefined"));
  const int64_t n = images.sizes()[0], c = images.sizes()[1], h = images.sizes()[2], w = images.sizes()[3];
  ENGINE_CHECK(n >= 1 && c >= 1 && c <= 4 && h >= 1 && w >= 1,
               "make_grid: expected N >= 1 images of 1 to 4 channels, got shape {}", images.sizes().str());
  ENGINE_CHECK(nrow >= 1 && padding >= 0, "make_grid: nrow must be >= 1 and padding >= 0, got {} and {}", nrow,
               padding);
  const int64_t cols = std::min(nrow, n), rows = (n + cols - 1) / cols;
  const int64_t gh = rows * (h + padding) + padding, gw = cols * (w + padding) + padding;
  Tensor src = images.detach().to(Device::cpu()).to(DType::f32).contiguous();
  Tensor out = full({gh, gw, c}, double(pad_value), opts(DType::u8));
  const float* in = src.data<float>();
  uint8_t* o = out.data<uint8_t>();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t y0 = padding + (i / cols) * (h + padding), x0 = padding + (i % cols) * (w + padding);
    const float* img = in + i * c * h * w;
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x)
        for (int64_t k = 0; k < c; ++k)
          o[((y0 + y) * gw + (x0 + x)) * c + k] = float_to_byte(img[(k * h + y) * w + x]);
  }
  return out;
}

}  // namespace engine::io
