// image.h: decoding, encoding and resampling of images for the data pipeline and sample grids
// (DESIGN.md section 11; docs/eval-data-formats.md sections 4 and 5).
//
// Built on stb (Debian's libstb-dev: the headers under /usr/include/stb/, the implementation
// compiled once in libstb.so, so no STB_*_IMPLEMENTATION macro appears in this project).
//
// Layouts: "image" below means a contiguous CPU u8 tensor [H, W, C] (C = 1 grey, 2 grey+alpha,
// 3 RGB, 4 RGBA), the layout codecs and resamplers use; the network side uses f32 [C, H, W] in
// [-1, 1]. to_float / to_u8 convert between the two (u8 v <-> v / 127.5 - 1; to_u8 clamps and
// rounds to nearest, so u8 -> f32 -> u8 is exact).
//
// Every failure (unreadable file, corrupt or truncated data, unsupported format, bad shape) is an
// engine::Error naming the file (or the `source` given for in-memory data) and, for decoding
// errors, stb's reason; nothing here aborts the process.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "tensor/tensor.h"

namespace engine::io {

// Decode PNG, JPEG, BMP, GIF (first frame), TGA, PSD, HDR (tone-mapped to 8 bit), PIC or PNM
// from memory into u8 [H, W, C]. `channels` 1..4 converts to that many channels (stb's
// conversion: grey is replicated, missing alpha is 255); 0 keeps the file's own count.
Tensor decode_image(const void* data, size_t size, const std::string& source, int channels = 3);
// The same from a file.
Tensor read_image(const std::string& path, int channels = 3);

// u8 [H, W, C] -> f32 [C, H, W] in [-1, 1], and back (clamped, rounded to nearest).
Tensor to_float(const Tensor& image);
Tensor to_u8(const Tensor& chw);

// Encode u8 [H, W, C] (C 1..4) as PNG bytes / write a PNG file (atomically, io/atomic_file.h:
// temporary, fsync, rename, so a reader never sees half a file).
std::string encode_png(const Tensor& image);
void write_png(const std::string& path, const Tensor& image);
// JPEG bytes (C 1..4; alpha is dropped by stb), quality 1..100. For fixtures and previews.
std::string encode_jpeg(const Tensor& image, int quality = 95);

// The largest centred square of u8 [H, W, C]: side min(H, W), offset floor((H - side) / 2)
// rows and floor((W - side) / 2) columns (torchvision's CenterCrop rounds the same way for even
// differences; odd ones keep the extra pixel on the bottom/right). Returns a contiguous copy.
Tensor center_crop_square(const Tensor& image);

// Resampling filters of stb_image_resize. automatic = Catmull-Rom when enlarging, Mitchell when
// shrinking (stb's default, a good sharpness/ringing trade-off); box averages whole input pixels.
enum class ResizeFilter { automatic, box, triangle, cubic_bspline, catmull_rom, mitchell };

// Resize u8 [H, W, C] to [out_h, out_w, C]. Values are filtered as stored (no sRGB
// linearisation), as PIL and the StyleGAN-T pipeline do. Edges reflect (stb's
// STBIR_EDGE_REFLECT), so borders do not darken or brighten. With 2 or 4 channels the last one
// is alpha and colours are weighted by it, so fully transparent pixels do not bleed their
// (arbitrary) colour.
Tensor resize_image(const Tensor& image, int64_t out_h, int64_t out_w,
                    ResizeFilter filter = ResizeFilter::automatic);

// Lay out N images f32 [N, C, H, W] in [-1, 1] (any device/strides; C 1..4) as a grid: `nrow`
// images per row, ceil(N / nrow) rows, `padding` pixels of `pad_value` around and between the
// cells (torchvision.utils.make_grid's geometry: height = rows * (H + padding) + padding).
// Returns u8 [Hg, Wg, C], ready for write_png.
Tensor make_grid(const Tensor& images, int64_t nrow = 8, int64_t padding = 2, uint8_t pad_value = 0);

}  // namespace engine::io
