#!/usr/bin/env python3
"""ref_tokenizer.py: an independent, plain-Python CLIP BPE tokenizer, the parity reference for
tests/test_tokenizer.cpp. It never calls the C++ code.

It follows OpenAI CLIP's simple_tokenizer.py (the published algorithm) line for line, with two
substitutions because the packages may be missing:
  * ftfy.fix_text is skipped, as the C++ does (see io/clip_text.h);
  * the `regex` module is used when installed; otherwise its findall is reimplemented with
    unicodedata categories (\\p{L}, \\p{N}) and the two IGNORECASE effects that matter after
    lowercasing: "ſ" (U+017F) matches 's' in the literals, and U+0345 matches no alternative.

Usage: ref_tokenizer.py VOCAB_GZ OUT_DIR [FUZZ_COUNT]
Writes OUT_DIR/ref_tokenizer.json (per caption: text, cleaned text, words, ids, 77-token row, and
decode cases) and OUT_DIR/vocab.json + OUT_DIR/merges.txt (the Hugging Face form of the same
vocabulary, built here from the .gz so the C++ HF loader can be checked against it).
"""
import gzip
import html
import json
import os
import random
import re
import sys
import unicodedata

try:
    import regex  # what OpenAI's code imports
except ImportError:
    regex = None

PATTERN = (r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|"""
           r"""[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""")


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2 ** 8):
        if b not in bs:
            bs.append(b)
            cs.append(2 ** 8 + n)
            n += 1
    return dict(zip(bs, [chr(n) for n in cs]))


def get_pairs(word):
    return set(zip(word, word[1:]))


def clean(text):
    # basic_clean without ftfy, then whitespace_clean, then lower (simple_tokenizer.encode)
    text = html.unescape(html.unescape(text)).strip()
    text = re.sub(r'\s+', ' ', text).strip()
    return text.lower()


def _kind(ch):
    if ch == '\u0345':
        return 'ignored'
    if ch.isspace() and ch not in '\x1c\x1d\x1e\x1f':  # regex's \s is Unicode White_Space
        return 'space'
    cat = unicodedata.category(ch)
    return {'L': 'letter', 'N': 'number'}.get(cat[0], 'other')


def _literal_at(text, i, lit):
    if len(text) - i < len(lit):
        return False
    return all(a == b or (b == 's' and a == '\u017f') for a, b in zip(text[i:i + len(lit)], lit))


def findall_fallback(text):
    literals = ['<|startoftext|>', '<|endoftext|>', "'s", "'t", "'re", "'ve", "'m", "'ll", "'d"]
    words, i = [], 0
    while i < len(text):
        lit = next((l for l in literals if _literal_at(text, i, l)), None)
        if lit:
            words.append(text[i:i + len(lit)])
            i += len(lit)
            continue
        kind = _kind(text[i])
        if kind in ('space', 'ignored'):
            i += 1
            continue
        j = i + 1
        if kind == 'letter':
            while j < len(text) and _kind(text[j]) == 'letter':
                j += 1
        elif kind == 'other':
            while j < len(text) and _kind(text[j]) == 'other':
                j += 1
        words.append(text[i:j])
        i = j
    return words


def findall(text):
    if regex is not None:
        return regex.findall(PATTERN, text, regex.IGNORECASE)
    return findall_fallback(text)


class SimpleTokenizer:
    def __init__(self, bpe_path):
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {v: k for k, v in self.byte_encoder.items()}
        merges = gzip.open(bpe_path).read().decode("utf-8").split('\n')
        merges = merges[1:49152 - 256 - 2 + 1]
        self.merges = [tuple(merge.split()) for merge in merges]
        vocab = list(self.byte_encoder.values())
        vocab = vocab + [v + '</w>' for v in vocab]
        for merge in self.merges:
            vocab.append(''.join(merge))
        vocab.extend(['<|startoftext|>', '<|endoftext|>'])
        self.encoder = dict(zip(vocab, range(len(vocab))))
        self.decoder = {v: k for k, v in self.encoder.items()}
        self.bpe_ranks = dict(zip(self.merges, range(len(self.merges))))
        self.cache = {'<|startoftext|>': '<|startoftext|>', '<|endoftext|>': '<|endoftext|>'}

    def bpe(self, token):
        if token in self.cache:
            return self.cache[token]
        word = tuple(token[:-1]) + (token[-1] + '</w>',)
        pairs = get_pairs(word)
        if not pairs:
            return token + '</w>'
        while True:
            bigram = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, float('inf')))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            new_word = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                    new_word.extend(word[i:j])
                    i = j
                except ValueError:
                    new_word.extend(word[i:])
                    break
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            word = tuple(new_word)
            if len(word) == 1:
                break
            pairs = get_pairs(word)
        word = ' '.join(word)
        self.cache[token] = word
        return word

    def encode(self, text):
        ids = []
        for token in findall(clean(text)):
            token = ''.join(self.byte_encoder[b] for b in token.encode('utf-8'))
            ids.extend(self.encoder[t] for t in self.bpe(token).split(' '))
        return ids

    def decode(self, tokens):
        text = ''.join(self.decoder[t] for t in tokens)
        return bytearray([self.byte_decoder[c] for c in text]).decode('utf-8', errors="replace") \
            .replace('</w>', ' ')

    def tokenize_row(self, text, context_length=77):
        # open_clip: [sot] + ids + [eot], cut to context_length with eot last, zero padded
        tokens = [self.encoder['<|startoftext|>']] + self.encode(text) + \
            [self.encoder['<|endoftext|>']]
        if len(tokens) > context_length:
            tokens = tokens[:context_length]
            tokens[-1] = self.encoder['<|endoftext|>']
        return tokens + [0] * (context_length - len(tokens))


CAPTIONS = [
    "a photo of a cat",
    "A PHOTO OF A CAT",
    "",
    "   ",
    "Hello, world!!! ... (really?) #hashtag @user -- 50% off; [x] {y} <z> ~/path/to/file.txt",
    "1234",
    "iPhone 12 Pro costs $999.99 (2021), 3.5mm jack, 4K@60fps, 1,000,000 views",
    "café naïve",
    "Crème Brûlée à la façon de Zoë, São Paulo, Ærøskøbing, Łódź, İstanbul",
    "东京タワーの夜景 一只猫在沙发上 한국어 텍스트",
    "🍎 red apple",
    "👩‍👩‍👧 family, 🇯🇵 flag, 👍🏽 thumbs, ❤️ heart",
    "it's",
    "IT'S a dog's life: we'll, they've, I'm, you'd, she's, don't, rock 'n' roll, 'twas",
    "it’s a curly apostrophe “quoted”",
    "fish &amp; chips",
    "&lt;b&gt;bold&lt;/b&gt; &quot;quoted&quot; &#39;single&#39; &amp;amp; double",
    "&#x1F34E; &#127822; &nbsp;non&nbsp;breaking &notit; &ampx &#0; &#128; &#xD800; &#99999999999;",
    "   lots   of \t\n whitespace \u00a0\u3000 everywhere   ",
    "<|startoftext|>hello<|endoftext|> <|STARTOFTEXT|> <|\u017ftartoftext|>",
    "ΟΔΥΣΣΕΥΣ ΣΑΣ Σ aΣ. ΣΑΣ'Σ",
    "a\u0345b \x1cx\x1fy ſ's",
    "Ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３ ﬁne ligature",
    "a red car parked next to a blue house under a cloudy sky " * 12,
    "supercalifragilisticexpialidocious antidisestablishmentarianism pneumonoultramicroscopic",
]

POOLS = [
    "abcdefghijklmnopqrstuvwxyz",
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "0123456789",
    " \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000\u2028\u2029\u202f\u3000",
    "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
    "éèêëàâäôöûüçñøåæœßÉÈÊÀÇÑØÅÆŒ",
    "ΣσςΑαΟοΔδΥυ\u0301\u0308\u0345'\u00ad",
    "İıſKÅ\u212a\u212b\u1e9e",
    "東京一只猫在沙发上한국어テキスト",
    "\U0001F34E\U0001F600\u2764\ufe0f\u200d\U0001F469\U0001F3FD\U0001F1EF\U0001F1F5",
    "ⅠⅡⅫ½¾²³٣७௫",
]
FRAGMENTS = ["&amp;", "&lt;", "&gt;", "&quot;", "&#39;", "&#x27;", "&nbsp;", "&amp;amp;", "&copy",
             "&notin;", "&notit;", "&ampx", "&#0;", "&#128;", "&#x9F;", "&#xD800;", "&#1;",
             "&#99999999999;", "&", "&#", "&#x;", "&;", "&Sigma;", "'s", "'S", "'ll", "'re",
             "<|startoftext|>", "<|endoftext|>", "<|endoftext", "'ſ", "  ", "\u0130", "\u03a3"]


def random_caption(rng):
    parts = []
    for _ in range(rng.randint(0, 24)):
        r = rng.random()
        if r < 0.15:
            parts.append(rng.choice(FRAGMENTS))
        elif r < 0.25:
            # any assigned, non-surrogate code point
            while True:
                cp = rng.randrange(0x20, 0x110000)
                if not 0xD800 <= cp <= 0xDFFF and unicodedata.category(chr(cp)) != 'Cn':
                    break
            parts.append(chr(cp))
        else:
            pool = rng.choice(POOLS)
            parts.append(''.join(rng.choice(pool) for _ in range(rng.randint(1, 8))))
    return ''.join(parts)


def main():
    if len(sys.argv) < 3:
        sys.exit("usage: ref_tokenizer.py VOCAB_GZ OUT_DIR [FUZZ_COUNT]")
    vocab_path, out_dir = sys.argv[1], sys.argv[2]
    fuzz_count = int(sys.argv[3]) if len(sys.argv) > 3 else 500
    tok = SimpleTokenizer(vocab_path)
    rng = random.Random(1234)
    captions = CAPTIONS + [random_caption(rng) for _ in range(fuzz_count)]
    cases = []
    for text in captions:
        cleaned = clean(text)
        cases.append({"text": text, "clean": cleaned, "words": findall(cleaned),
                      "ids": tok.encode(text), "row": tok.tokenize_row(text)})
    decodes = []
    for case in cases[:60]:
        decodes.append({"ids": case["row"], "text": tok.decode(case["row"])})
    for _ in range(200):  # arbitrary id runs: byte tokens split UTF-8 sequences, "</w>" inside
        ids = [rng.randrange(len(tok.decoder)) for _ in range(rng.randint(0, 12))]
        if rng.random() < 0.5:
            ids += [rng.randrange(512) for _ in range(rng.randint(1, 6))]
        decodes.append({"ids": ids, "text": tok.decode(ids)})
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "ref_tokenizer.json"), "w") as f:
        json.dump({"unicode_version": unicodedata.unidata_version,
                   "split": "regex" if regex is not None else "unicodedata",
                   "vocab_size": len(tok.encoder), "cases": cases, "decodes": decodes}, f)
    # Hugging Face layout: vocab.json is the encoder, merges.txt the header and the merges used.
    with open(os.path.join(out_dir, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(tok.encoder, f, ensure_ascii=False)
    with open(os.path.join(out_dir, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(" ".join(m) for m in tok.merges) + "\n")
    print(f"ref_tokenizer: {len(cases)} captions, {len(decodes)} decodes, split via "
          f"{'regex' if regex is not None else 'unicodedata'}")


if __name__ == "__main__":
    main()
