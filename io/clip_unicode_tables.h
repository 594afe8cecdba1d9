// clip_unicode_tables.h: the data tables behind the CLIP tokenizer's text cleaning and split.
//
// OpenAI's simple_tokenizer.py leans on Python for Unicode: html.unescape, str.isspace (re's \s
// and str.strip), str.lower and the regex module's \p{L} / \p{N}. The C++ reproduces those from
// tables dumped out of CPython by scripts/gen_clip_unicode_tables.py into the generated
// clip_unicode_tables.cpp; io/clip_text.cpp holds the code that uses them. All range tables are
// sorted and non-overlapping, so lookups are binary searches.
#pragma once
#include <cstdint>
#include <span>

namespace engine::io::clip_tables {

// Character classes of the pre-tokenizer split regex (see io/clip_text.h).
enum CharKind : uint8_t {
  kKindOther = 0,    // [^\s\p{L}\p{N}]: punctuation, symbols, emoji, marks, unassigned
  kKindLetter = 1,   // \p{L}
  kKindNumber = 2,   // \p{N}
  kKindSpace = 3,    // str.isspace() and the regex module's \s (Unicode White_Space)
  kKindIgnored = 4,  // matched by no alternative under IGNORECASE (U+0345), skipped like a space
  kKindPySpace = 5,  // str.isspace() but not Unicode White_Space (U+001C..U+001F): space when
                     // cleaning, punctuation ([^\s\p{L}\p{N}]) for the split
};

struct KindRange {
  char32_t first, last;
  uint8_t kind;
};
struct CodeRange {
  char32_t first, last;
};
// Code points first + k*stride (k < count) lowercase to themselves + delta.
struct LowerRun {
  char32_t first;
  uint16_t count;
  uint8_t stride;
  int32_t delta;
};
// A lowercase mapping to several code points (U+0130 -> "i" U+0307); unused slots are 0.
struct LowerMulti {
  char32_t cp;
  char32_t lower[3];
};
// One html.entities.html5 entry: name without '&' (with ';' where HTML5 has it), 1-2 code points.
struct HtmlEntity {
  const char* name;
  char32_t value[2];
};
// A numeric character reference that html.unescape replaces by another code point.
struct CharRefFix {
  char32_t num, replacement;
};

extern const char* const kUnicodeVersion;
extern const std::span<const KindRange> kKindRanges;
extern const std::span<const LowerRun> kLowerRuns;
extern const std::span<const LowerMulti> kLowerMulti;
extern const std::span<const CodeRange> kCaseIgnorable;
extern const std::span<const CodeRange> kCased;
extern const std::span<const HtmlEntity> kHtmlEntities;
extern const std::span<const CharRefFix> kInvalidCharRefs;
extern const std::span<const CodeRange> kInvalidCodePoints;

}  // namespace engine::io::clip_tables
