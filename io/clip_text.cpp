// clip_text.cpp: UTF-8, caption cleaning and the pre-tokenizer split of the CLIP tokenizer,
// reimplementing the Python pieces that OpenAI's simple_tokenizer.py relies on (html.unescape,
// str.isspace, str.lower, the regex module's findall). See clip_text.h for the pipeline and
// io/clip_unicode_tables.h for where the Unicode data comes from.
#include "io/clip_text.h"

#include <algorithm>
#include <cstring>

#include "io/clip_unicode_tables.h"

namespace engine::io {
namespace {

namespace tables = clip_tables;

constexpr char32_t kReplacement = 0xFFFD;

// Binary search of a sorted, non-overlapping range table.
template <typename Range>
const Range* find_range(std::span<const Range> ranges, char32_t cp) {
  auto it = std::upper_bound(ranges.begin(), ranges.end(), cp,
                             [](char32_t c, const Range& r) { return c < r.first; });
  if (it == ranges.begin()) return nullptr;
  --it;
  return cp <= it->last ? &*it : nullptr;
}

bool in_ranges(std::span<const tables::CodeRange> ranges, char32_t cp) {
  return find_range(ranges, cp) != nullptr;
}

// Split class of one code point; ASCII, the bulk of captions, skips the search.
uint8_t char_kind(char32_t cp) {
  if (cp < 0x80) {
    if ((cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z')) return tables::kKindLetter;
    if (cp >= '0' && cp <= '9') return tables::kKindNumber;
    if (cp == ' ' || (cp >= 0x09 && cp <= 0x0D)) return tables::kKindSpace;
    if (cp >= 0x1C && cp <= 0x1F) return tables::kKindPySpace;
    return tables::kKindOther;
  }
  const tables::KindRange* r = find_range(tables::kKindRanges, cp);
  return r ? r->kind : static_cast<uint8_t>(tables::kKindOther);
}

// Single code point lowercase, 0 when the mapping is longer (then see kLowerMulti).
char32_t lower_one(char32_t cp) {
  if (cp < 0x80) return (cp >= 'A' && cp <= 'Z') ? cp + 32 : cp;
  auto runs = tables::kLowerRuns;
  auto it = std::upper_bound(runs.begin(), runs.end(), cp,
                             [](char32_t c, const tables::LowerRun& r) { return c < r.first; });
  if (it == runs.begin()) return cp;
  --it;
  const char32_t offset = cp - it->first;
  if (offset % it->stride == 0 && offset / it->stride < it->count)
    return static_cast<char32_t>(static_cast<int64_t>(cp) + it->delta);
  return cp;
}

// CPython's handle_capital_sigma: U+03A3 lowercases to final sigma U+03C2 when it ends a word,
// i.e. \p{cased}\p{case-ignorable}* Σ !(\p{case-ignorable}* \p{cased}).
bool is_final_sigma(std::u32string_view text, size_t i) {
  size_t j = i;
  bool found = false;
  char32_t c = 0;
  while (j > 0) {
    c = text[--j];
    if (!in_ranges(tables::kCaseIgnorable, c)) {
      found = true;
      break;
    }
  }
  if (!found || !in_ranges(tables::kCased, c)) return false;
  for (j = i + 1; j < text.size(); ++j) {
    c = text[j];
    if (!in_ranges(tables::kCaseIgnorable, c)) return !in_ranges(tables::kCased, c);
  }
  return true;
}

const tables::HtmlEntity* find_entity(std::string_view name) {
  auto ents = tables::kHtmlEntities;
  auto it = std::lower_bound(ents.begin(), ents.end(), name,
                             [](const tables::HtmlEntity& e, std::string_view n) {
                               return std::string_view(e.name) < n;
                             });
  return (it != ents.end() && std::string_view(it->name) == name) ? &*it : nullptr;
}

void append_entity(const tables::HtmlEntity& e, std::u32string& out) {
  out.push_back(e.value[0]);
  if (e.value[1]) out.push_back(e.value[1]);
}

bool is_digit(char32_t c) { return c >= '0' && c <= '9'; }
int hex_value(char32_t c) {
  if (c >= '0' && c <= '9') return static_cast<int>(c - '0');
  if (c >= 'a' && c <= 'f') return static_cast<int>(c - 'a' + 10);
  if (c >= 'A' && c <= 'F') return static_cast<int>(c - 'A' + 10);
  return -1;
}

// html.unescape's _replace_charref for a numeric reference; Python's int() is unbounded, so the
// value saturates just past U+10FFFF, which maps to U+FFFD either way.
void append_numeric_ref(char32_t num, std::u32string& out) {
  auto fixes = tables::kInvalidCharRefs;
  auto it = std::lower_bound(fixes.begin(), fixes.end(), num,
                             [](const tables::CharRefFix& f, char32_t n) { return f.num < n; });
  if (it != fixes.end() && it->num == num) {
    out.push_back(it->replacement);
  } else if ((num >= 0xD800 && num <= 0xDFFF) || num > 0x10FFFF) {
    out.push_back(kReplacement);
  } else if (!in_ranges(tables::kInvalidCodePoints, num)) {
    out.push_back(num);
  }  // else: an invalid code point, dropped
}

// The characters [^\t\n\f <&#;] of html.unescape's named-reference pattern.
bool is_entity_name_char(char32_t c) {
  return c != '\t' && c != '\n' && c != '\f' && c != ' ' && c != '<' && c != '&' && c != '#' &&
         c != ';';
}

// Literal match for the split's special tokens and contractions under IGNORECASE: the text is
// already lowercase, and the only other character the regex module folds onto one of these
// ASCII letters is U+017F LATIN SMALL LETTER LONG S (onto 's'; verified for all code points).
bool match_literal(std::u32string_view text, size_t i, std::string_view lit) {
  if (text.size() - i < lit.size()) return false;
  for (size_t k = 0; k < lit.size(); ++k) {
    const char32_t c = text[i + k];
    const auto want = static_cast<char32_t>(lit[k]);
    if (c != want && !(want == 's' && c == 0x17F)) return false;
  }
  return true;
}

}  // namespace

void append_utf8(char32_t cp, std::string& out) {
  if ((cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) cp = kReplacement;
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::u32string utf8_to_u32(std::string_view text) {
  // Well-formed UTF-8 (Unicode table 3-7). On a bad byte the sequence read so far (its maximal
  // valid prefix) becomes one U+FFFD and decoding resumes at the bad byte, as CPython does.
  std::u32string out;
  out.reserve(text.size());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    const auto b = static_cast<unsigned char>(text[i]);
    if (b < 0x80) {
      out.push_back(b);
      ++i;
      continue;
    }
    int need = 0;
    char32_t cp = 0;
    unsigned char lo = 0x80, hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) {
      need = 1;
      cp = b & 0x1F;
    } else if (b >= 0xE0 && b <= 0xEF) {
      need = 2;
      cp = b & 0x0F;
      if (b == 0xE0) lo = 0xA0;  // no overlong forms
      if (b == 0xED) hi = 0x9F;  // no surrogates
    } else if (b >= 0xF0 && b <= 0xF4) {
      need = 3;
      cp = b & 0x07;
      if (b == 0xF0) lo = 0x90;  // no overlong forms
      if (b == 0xF4) hi = 0x8F;  // nothing past U+10FFFF
    } else {
      out.push_back(kReplacement);
      ++i;
      continue;
    }
    size_t j = i + 1;
    int got = 0;
    while (got < need && j < n) {
      const auto c = static_cast<unsigned char>(text[j]);
      if (c < lo || c > hi) break;
      cp = (cp << 6) | (c & 0x3F);
      ++j;
      ++got;
      lo = 0x80;
      hi = 0xBF;
    }
    out.push_back(got == need ? cp : kReplacement);
    i = j;
  }
  return out;
}

std::string u32_to_utf8(std::u32string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char32_t cp : text) append_utf8(cp, out);
  return out;
}

std::string utf8_repair(std::string_view bytes) {
  bool ascii = true;
  for (char c : bytes) ascii = ascii && static_cast<unsigned char>(c) < 0x80;
  if (ascii) return std::string(bytes);
  return u32_to_utf8(utf8_to_u32(bytes));
}

bool py_isspace(char32_t cp) {
  const uint8_t k = char_kind(cp);
  return k == tables::kKindSpace || k == tables::kKindPySpace;
}

std::u32string html_unescape(std::u32string_view text) {
  // Python: re.sub(r'&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)', _replace_charref)
  if (text.find(U'&') == std::u32string_view::npos) return std::u32string(text);
  std::u32string out;
  out.reserve(text.size());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    if (text[i] != '&') {
      out.push_back(text[i++]);
      continue;
    }
    const size_t j = i + 1;
    if (j < n && text[j] == '#') {
      size_t k = j + 1;
      const bool decimal = k < n && is_digit(text[k]);
      const bool hex = !decimal && k + 1 < n && (text[k] == 'x' || text[k] == 'X') &&
                       hex_value(text[k + 1]) >= 0;
      if (!decimal && !hex) {  // "&#" alone: no alternative matches, '&' stays literal
        out.push_back(text[i++]);
        continue;
      }
      uint32_t num = 0;
      const uint32_t cap = 0x110000;  // saturate: any value past U+10FFFF behaves the same
      if (decimal) {
        for (; k < n && is_digit(text[k]); ++k) num = std::min<uint32_t>(num * 10 + (text[k] - '0'), cap);
      } else {
        for (k = k + 1; k < n && hex_value(text[k]) >= 0; ++k)
          num = std::min<uint32_t>(num * 16 + static_cast<uint32_t>(hex_value(text[k])), cap);
      }
      if (k < n && text[k] == ';') ++k;
      append_numeric_ref(num, out);
      i = k;
      continue;
    }
    // Named reference: up to 32 name characters, then an optional ';'.
    size_t k = j;
    while (k < n && k - j < 32 && is_entity_name_char(text[k])) ++k;
    if (k == j) {  // "&" followed by nothing usable: literal
      out.push_back(text[i++]);
      continue;
    }
    if (k < n && text[k] == ';') ++k;
    const std::u32string_view ref = text.substr(j, k - j);
    // Entity names are ASCII; only the ASCII prefix of the reference can match one.
    std::string name;
    for (char32_t c : ref) {
      if (c >= 0x80) break;
      name.push_back(static_cast<char>(c));
    }
    const tables::HtmlEntity* e = name.size() == ref.size() ? find_entity(name) : nullptr;
    if (e) {
      append_entity(*e, out);
    } else {
      // The longest prefix (at least 2 characters) that is an entity, e.g. "&ampx" -> "&x".
      size_t x = std::min(ref.size() - 1, name.size());
      for (; x >= 2; --x) {
        if ((e = find_entity(std::string_view(name).substr(0, x)))) break;
      }
      if (e) {
        append_entity(*e, out);
        out.append(ref.substr(x));
      } else {
        out.push_back('&');
        out.append(ref);
      }
    }
    i = k;
  }
  return out;
}

std::u32string py_lower(std::u32string_view text) {
  std::u32string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    const char32_t cp = text[i];
    if (cp == 0x3A3) {
      out.push_back(is_final_sigma(text, i) ? 0x3C2 : 0x3C3);
      continue;
    }
    if (cp >= 0x80) {
      bool multi = false;
      for (const tables::LowerMulti& m : tables::kLowerMulti) {
        if (m.cp != cp) continue;
        for (char32_t c : m.lower)
          if (c) out.push_back(c);
        multi = true;
      }
      if (multi) continue;
    }
    out.push_back(lower_one(cp));
  }
  return out;
}

std::u32string clean_caption(std::string_view text) {
  // ftfy.fix_text is not applied (see clip_text.h). basic_clean's strip() is subsumed by the
  // whitespace collapse and strip below.
  const std::u32string unescaped = html_unescape(html_unescape(utf8_to_u32(text)));
  // re.sub(r'\s+', ' ', text).strip(): re's \s on str is str.isspace().
  std::u32string collapsed;
  collapsed.reserve(unescaped.size());
  bool pending_space = false;
  for (char32_t cp : unescaped) {
    if (py_isspace(cp)) {
      pending_space = !collapsed.empty();
      continue;
    }
    if (pending_space) collapsed.push_back(' ');
    pending_space = false;
    collapsed.push_back(cp);
  }
  return py_lower(collapsed);
}

std::string clean_caption_utf8(std::string_view text) { return u32_to_utf8(clean_caption(text)); }

std::vector<std::string> split_words(std::u32string_view text) {
  // regex.findall tries the alternatives in order at each position and skips a position where
  // none matches (spaces, and U+0345, see kKindIgnored). The runs are greedy and never give back.
  static constexpr std::string_view kLiterals[] = {"<|startoftext|>", "<|endoftext|>", "'s", "'t",
                                                   "'re", "'ve", "'m", "'ll", "'d"};
  std::vector<std::string> words;
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    const char32_t cp = text[i];
    size_t end = i;
    if (cp == '<' || cp == '\'') {
      for (std::string_view lit : kLiterals) {
        if (match_literal(text, i, lit)) {
          end = i + lit.size();
          break;
        }
      }
    }
    if (end == i) {
      const uint8_t kind = char_kind(cp);
      if (kind == tables::kKindLetter) {
        end = i + 1;
        while (end < n && char_kind(text[end]) == tables::kKindLetter) ++end;
      } else if (kind == tables::kKindNumber) {
        end = i + 1;  // [\p{N}]: one digit per word
      } else if (kind == tables::kKindOther || kind == tables::kKindPySpace) {
        end = i + 1;
        while (end < n) {
          const uint8_t k = char_kind(text[end]);
          if (k != tables::kKindOther && k != tables::kKindPySpace) break;
          ++end;
        }
      } else {
        ++i;  // space or ignored: not part of any word
        continue;
      }
    }
    words.push_back(u32_to_utf8(text.substr(i, end - i)));
    i = end;
  }
  return words;
}

}  // namespace engine::io
