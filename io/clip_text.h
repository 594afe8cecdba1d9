// clip_text.h: the text side of the CLIP BPE tokenizer: UTF-8, caption cleaning and the
// pre-tokenizer split, exactly as OpenAI's simple_tokenizer.py does them in Python.
//
// OpenAI (CLIP/clip/simple_tokenizer.py, also vendored by open_clip and Aurora):
//
//   text = whitespace_clean(basic_clean(text)).lower()
//     basic_clean:      ftfy.fix_text, html.unescape twice, strip
//     whitespace_clean: re.sub(r'\s+', ' ', text).strip()
//   words = regex.findall(r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|"
//                         r"[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+", text, regex.IGNORECASE)
//
// What we do instead of ftfy.fix_text: nothing. ftfy is a heuristic mojibake repairer (plus quote
// uncurling, ligature and width folding, NFC); it is not available here and has no published spec,
// so clean_caption() applies the rest of the pipeline only: html.unescape twice (the full HTML5
// entity table and numeric references, with Python's fix-ups for invalid ones), collapse runs of
// str.isspace() characters to one space, strip, and str.lower() (full mappings, final sigma).
// For captions that ftfy would leave alone (plain UTF-8 without curly quotes, ligatures,
// full-width forms or non-NFC sequences) the result is identical to OpenAI's; e.g. "it’s" with a
// curly apostrophe splits as "it" "’" "s" here, but as "it" "'s" after ftfy's uncurl_quotes.
//
// The Unicode tables (io/clip_unicode_tables.cpp) come from CPython 3.11, Unicode 14.0.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace engine::io {

// UTF-8 to code points. Invalid input never throws: each maximal invalid subsequence becomes one
// U+FFFD, as Python's bytes.decode("utf-8", errors="replace") does.
std::u32string utf8_to_u32(std::string_view text);
// Code points to UTF-8 (surrogates and values past U+10FFFF are written as U+FFFD).
std::string u32_to_utf8(std::u32string_view text);
void append_utf8(char32_t cp, std::string& out);
// bytes.decode("utf-8", errors="replace") re-encoded: valid UTF-8 passes through unchanged.
std::string utf8_repair(std::string_view bytes);

// Python's html.unescape (HTML5 named and numeric character references).
std::u32string html_unescape(std::u32string_view text);
// Python's str.lower(), including U+0130 -> "i̇" and the Greek final sigma rule.
std::u32string py_lower(std::u32string_view text);
// Python's str.isspace() for one character.
bool py_isspace(char32_t cp);

// The whole cleaning step: html.unescape twice, whitespace collapse, strip, lower (no ftfy; see
// above). Returns code points; clean_caption_utf8 is the UTF-8 convenience for tests and tools.
std::u32string clean_caption(std::string_view text);
std::string clean_caption_utf8(std::string_view text);

// The regex findall over cleaned text: the pieces (UTF-8) that BPE then encodes one by one.
// IGNORECASE is modelled for lowercased input only (what clean_caption returns): U+017F "ſ"
// matches 's' in <|startoftext|> and 's, and U+0345 matches no alternative.
std::vector<std::string> split_words(std::u32string_view cleaned);

}  // namespace engine::io
