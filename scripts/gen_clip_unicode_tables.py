#!/usr/bin/env python3
"""gen_clip_unicode_tables.py: regenerate io/clip_unicode_tables.cpp, the Unicode and HTML data
behind the C++ CLIP tokenizer (io/clip_text.cpp).

OpenAI's simple_tokenizer.py cleans a caption with Python's html.unescape, str.strip, re's \\s and
str.lower, then splits it with the `regex` module's \\p{L} / \\p{N} classes. C++ has none of these,
so this script dumps exactly what CPython does, from the interpreter that runs it:

  * character classes for the split: letter (\\p{L} = Lu Ll Lt Lm Lo), number (\\p{N} = Nd Nl No),
    space (str.isspace, which is what both re's \\s and str.strip use; PY_ONLY_SPACES below are
    not the regex module's \\s), and "ignored": characters that the regex module, compiled with
    IGNORECASE as OpenAI does, matches with none of the alternatives (IGNORECASE_DROPPED below);
  * str.lower() per code point (full mapping: U+0130 becomes two code points), plus the Cased and
    Case_Ignorable properties that CPython's lower() needs for the Greek final sigma rule, found by
    probing lower() itself (unicodedata does not expose them);
  * html.entities.html5 and html.unescape's private tables of numeric references that are
    remapped (_invalid_charrefs) or dropped (_invalid_codepoints).

The tables follow this interpreter's unicodedata (Python 3.11: Unicode 14.0.0); the version is
written into the output. Usage, from the repository root:

    python3 scripts/gen_clip_unicode_tables.py > io/clip_unicode_tables.cpp
"""
import html
import html.entities
import sys
import unicodedata

MAX_CP = 0x110000

# U+0345 COMBINING GREEK YPOGEGRAMMENI (Mn) case-folds to iota, a letter. With IGNORECASE the regex
# module rejects it from [\p{L}] but also from the negated [^\s\p{L}\p{N}] (a negated set tests all
# case variants), so findall skips it like a space. Verified over every assigned code point against
# regex 2022.10.31; check_against_regex() repeats that check when the module is installed.
IGNORECASE_DROPPED = [0x345]

# str.isspace() (re's \s and str.strip) also holds for the separators U+001C..U+001F, which are
# not Unicode White_Space and so not the regex module's \s: the split sees them as punctuation.
PY_ONLY_SPACES = [0x1C, 0x1D, 0x1E, 0x1F]

KIND_OTHER, KIND_LETTER, KIND_NUMBER, KIND_SPACE, KIND_IGNORED, KIND_PY_SPACE = 0, 1, 2, 3, 4, 5


def code_points():
    """Every code point except surrogates (Python str can hold them; UTF-8 text cannot)."""
    for c in range(MAX_CP):
        if 0xD800 <= c <= 0xDFFF:
            continue
        yield c


def char_kind(c):
    ch = chr(c)
    if c in IGNORECASE_DROPPED:
        return KIND_IGNORED
    if ch.isspace():
        return KIND_PY_SPACE if c in PY_ONLY_SPACES else KIND_SPACE
    cat = unicodedata.category(ch)
    if cat[0] == 'L':
        return KIND_LETTER
    if cat[0] == 'N':
        return KIND_NUMBER
    return KIND_OTHER


def ranges_of(pred):
    """[(first, last, value)] for maximal runs of code points where pred(c) is a non-zero value."""
    out = []
    for c in code_points():
        v = pred(c)
        if not v:
            continue
        if out and out[-1][1] == c - 1 and out[-1][2] == v:
            out[-1][1] = c
        else:
            out.append([c, c, v])
    return out


def lower_runs():
    """Single code point lowercase mappings as runs (first, count, stride, delta): Unicode pairs
    upper/lower case letters either in blocks (stride 1) or alternating (stride 2)."""
    pairs = []
    multi = []
    for c in code_points():
        if c == 0x3A3:
            continue  # capital sigma: context dependent, handled in code
        low = chr(c).lower()
        if low == chr(c):
            continue
        if len(low) == 1:
            pairs.append((c, ord(low) - c))
        else:
            multi.append((c, [ord(x) for x in low]))
    runs = []
    for c, d in pairs:
        if runs:
            first, count, stride, delta = runs[-1]
            last = first + (count - 1) * stride
            if d == delta and count == 1 and c - first in (1, 2):
                runs[-1] = [first, 2, c - first, delta]
                continue
            if d == delta and c - last == stride:
                runs[-1][1] += 1
                continue
        runs.append([c, 1, 1, d])
    # The C++ finds the last run starting at or before a code point, so runs must not interleave.
    for a, b in zip(runs, runs[1:]):
        assert a[0] + (a[1] - 1) * a[2] < b[0], (a, b)
    return runs, multi


def case_properties():
    """Case_Ignorable and Cased as CPython's lower() sees them, by probing its final sigma rule
    (handle_capital_sigma in unicodeobject.c):
      ('A' + c + 'Σ').lower() ends in 'ς'  iff  ignorable(c) or cased(c)
      ('AΣ' + c).lower()[1] == 'ς'          iff  ignorable(c) or not cased(c)
    so ignorable = both; for the other characters cased = the first probe. The rule never asks
    whether an ignorable character is cased."""
    ignorable, cased = set(), set()
    for c in code_points():
        ch = chr(c)
        if c == 0x3A3:
            cased.add(c)
            continue
        p2 = ('A' + ch + '\u03a3').lower()[-1] == '\u03c2'
        p3 = ('A\u03a3' + ch).lower()[1] == '\u03c2'
        if p2 and p3:
            ignorable.add(c)
        elif p2:
            cased.add(c)
    return ignorable, cased


def check_against_regex():
    """Optional: confirm the split classes against the regex module that OpenAI's code imports."""
    try:
        import regex
    except ImportError:
        return
    flags = regex.IGNORECASE
    letter = regex.compile(r'[\p{L}]', flags)
    number = regex.compile(r'[\p{N}]', flags)
    other = regex.compile(r'[^\s\p{L}\p{N}]', flags)
    for c in code_points():
        ch = chr(c)
        if unicodedata.category(ch) == 'Cn':
            continue  # regex may know a newer Unicode than unicodedata
        kind = char_kind(c)
        got = (bool(letter.match(ch)), bool(number.match(ch)), bool(other.match(ch)))
        want = (kind == KIND_LETTER, kind == KIND_NUMBER, kind in (KIND_OTHER, KIND_PY_SPACE))
        assert got == want, f'U+{c:04X}: regex says {got}, table says {want}'


def cpp_string(s):
    return '"' + ''.join(ch if ch.isalnum() or ch == ';' else f'\\x{ord(ch):02x}' for ch in s) + '"'


def main():
    check_against_regex()
    out = []
    w = out.append
    w('// clip_unicode_tables.cpp: GENERATED by scripts/gen_clip_unicode_tables.py; do not edit.')
    w('//')
    w('// Unicode and HTML data for the CLIP tokenizer\'s text cleaning and split (io/clip_text.cpp),')
    w(f'// dumped from CPython (unicodedata {unicodedata.unidata_version}) so that the C++ matches Python\'s')
    w('// html.unescape, str.isspace, str.lower and the regex module\'s \\p{L} / \\p{N} exactly. See')
    w('// the script for how each table is derived.')
    w('#include "io/clip_unicode_tables.h"')
    w('')
    w('namespace engine::io::clip_tables {')
    w('')
    w(f'const char* const kUnicodeVersion = "{unicodedata.unidata_version}";')
    w('')

    kinds = ranges_of(char_kind)
    w('// Split classes (CharKind): 1 letter, 2 number, 3 space, 4 ignored, 5 str.isspace() only;')
    w('// everything else is 0.')
    w('static const KindRange kKindData[] = {')
    for first, last, v in kinds:
        w(f'    {{0x{first:X}, 0x{last:X}, {v}}},')
    w('};')
    w('const std::span<const KindRange> kKindRanges(kKindData);')
    w('')

    runs, multi = lower_runs()
    w('// str.lower() for single code point results: code points first, first+stride, ... (count of')
    w('// them) map to themselves plus delta. U+03A3 is left out (final sigma rule, in code).')
    w('static const LowerRun kLowerData[] = {')
    for first, count, stride, delta in runs:
        w(f'    {{0x{first:X}, {count}, {stride}, {delta}}},')
    w('};')
    w('const std::span<const LowerRun> kLowerRuns(kLowerData);')
    w('// str.lower() results longer than one code point.')
    w('static const LowerMulti kLowerMultiData[] = {')
    for c, low in multi:
        assert len(low) <= 3
        w(f'    {{0x{c:X}, {{{", ".join(f"0x{x:X}" for x in low)}}}}},')
    w('};')
    w('const std::span<const LowerMulti> kLowerMulti(kLowerMultiData);')
    w('')

    ignorable, cased = case_properties()
    for name, values in (('CaseIgnorable', ignorable), ('Cased', cased)):
        rs = ranges_of(lambda c: 1 if c in values else 0)
        w(f'static const CodeRange k{name}Data[] = {{')
        for i in range(0, len(rs), 4):
            w('    ' + ' '.join(f'{{0x{a:X}, 0x{b:X}}},' for a, b, _ in rs[i:i + 4]))
        w('};')
        w(f'const std::span<const CodeRange> k{name}(k{name}Data);')
        w('')

    ents = sorted(html.entities.html5.items())
    w('// html.entities.html5, sorted by name (byte order) for binary search. Names include the')
    w('// trailing ";" where HTML5 lists one; the legacy names without it are separate entries.')
    w('static const HtmlEntity kHtmlEntityData[] = {')
    for name, value in ents:
        cps = [ord(x) for x in value]
        assert len(cps) <= 2
        w(f'    {{{cpp_string(name)}, {{{", ".join(f"0x{x:X}" for x in cps)}}}}},')
    w('};')
    w('const std::span<const HtmlEntity> kHtmlEntities(kHtmlEntityData);')
    w('')
    w('// html._invalid_charrefs: numeric references that HTML5 remaps (mostly windows-1252).')
    w('static const CharRefFix kInvalidCharRefData[] = {')
    for num, value in sorted(html._invalid_charrefs.items()):
        assert len(value) == 1
        w(f'    {{0x{num:X}, 0x{ord(value):X}}},')
    w('};')
    w('const std::span<const CharRefFix> kInvalidCharRefs(kInvalidCharRefData);')
    w('// html._invalid_codepoints: numeric references that html.unescape drops.')
    rs = ranges_of(lambda c: 1 if c in html._invalid_codepoints else 0)
    w('static const CodeRange kInvalidCodePointData[] = {')
    for i in range(0, len(rs), 4):
        w('    ' + ' '.join(f'{{0x{a:X}, 0x{b:X}}},' for a, b, _ in rs[i:i + 4]))
    w('};')
    w('const std::span<const CodeRange> kInvalidCodePoints(kInvalidCodePointData);')
    w('')
    w('}  // namespace engine::io::clip_tables')
    sys.stdout.write('\n'.join(out) + '\n')


if __name__ == '__main__':
    main()
