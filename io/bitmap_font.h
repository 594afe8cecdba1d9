// bitmap_font.h: a built-in 5x7 pixel font (ASCII 32..126) for the text of plots and analysis
// pictures (io/plot.h, aurora/router_viz.h), so that no font file or library is needed.
//
// Each glyph is 7 rows of 5 bits (bit 4 = leftmost column), drawn in a 6x8 cell (one column and
// one row of spacing). Text is drawn at integer scales (each font pixel becomes scale x scale
// image pixels) without anti-aliasing, so the pixels a string covers are exact, which the tests use.
#pragma once
#include <array>
#include <cstdint>
#include <string_view>

namespace engine::io {

struct Rgb {
  uint8_t r = 0, g = 0, b = 0;
  bool operator==(const Rgb&) const = default;
};

inline constexpr int kGlyphWidth = 5;    // font pixels
inline constexpr int kGlyphHeight = 7;   // font pixels
inline constexpr int kGlyphAdvance = 6;  // glyph width + 1 column of spacing

// The 7 rows of character `c`; characters outside 32..126 get the glyph of '?'.
const std::array<uint8_t, kGlyphHeight>& glyph_rows(char c);

// Width in image pixels of `text` at `scale` (no spacing after the last glyph; 0 for "").
int text_width(std::string_view text, int scale = 1);
inline int text_height(int scale = 1) { return kGlyphHeight * scale; }

// Draw `text` with its top-left corner at (x, y) into a u8 RGB image of `width` x `height`
// (row-major, 3 bytes per pixel); pixels outside the image are clipped.
void draw_text(uint8_t* rgb, int64_t width, int64_t height, int64_t x, int64_t y, std::string_view text, Rgb colour,
               int scale = 1);

}  // namespace engine::io
