"""Writes crates/bpe/test_data/tiktoken_reference.json.gz: the ids tiktoken gives for a varied
set of texts with GPT-2's, cl100k_base's and o200k_base's vocabularies. crates/bpe's oracle test
must reproduce them exactly.

    cargo xtask fixtures                      # gpt2.tiktoken, cl100k/o200k .tiktoken.gz
    benches/peers/setup.sh                    # venv with the pinned peers
    target/peers/venv/bin/python benches/peers/tiktoken_reference.py

The texts: hand-written hard cases (contractions, whitespace runs, digits, code, emoji, CJK,
combining marks, special-token text), seeded slices of the embedded corpus (en/fr/es), and
seeded random strings drawn from many scripts. Same inputs, same file.
"""

import os
import random
import sys

import tiktoken

from texts import corpus_slices, random_strings, write_json_gz
from vocabularies import ROOT, SPECS, encoding

OUT = os.path.join(ROOT, "crates", "bpe", "test_data", "tiktoken_reference.json.gz")


HAND_WRITTEN = [
    "Hello world",
    "I'm sure you'll see they'd say it's what we've done, he's 'S 'T 'RE",
    "DON'T SHOUT, I'LL LEAVE. We'Re MiXeD",
    "l'école d'été, aujourd'hui qu'il l’a vu — « guillemets » et œuvre",
    "¿Qué tal? ¡Olé! El niño comió piñas en el año 2024.",
    "12345678901234567890 3.14159 1,000,000 0x1F 1e-9 ٣٤٥ ²³ ½",
    "a  b   c\t\t d\n\n\n e  \n  f \r\n\r\n g\u00a0\u00a0h\u3000i\u2028j",
    "   leading spaces",
    "trailing spaces   ",
    " ",
    "\n",
    "",
    "def f(x):\n    return x ** 2  # square\n\n\nclass A:\n\tpass\n",
    'fn main() { let v: Vec<u32> = (0..10).map(|x| x * 2).collect(); println!("{v:?}"); }',
    "<html><body class=\"x\">&nbsp;&amp;</body></html>",
    "https://example.com/path?query=1&b=2#frag user@mail.fr",
    "👍🏽 👨‍👩‍👧‍👦 🇫🇷🇪🇸 ❤️‍🔥 🤖🤖🤖",
    "日本語のテキスト。中文文本，测试。한국어 텍스트입니다.",
    "مرحبا بالعالم — שלום עולם — Привет, мир! Γειά σου κόσμε",
    "हिन्दी में लिखा गया पाठ और தமிழ் உரை",
    "e\u0301 a\u0300\u0323 combining marks: Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "a" * 3000,
    "ab" * 700,
    " " * 100 + "x" + "\n" * 50 + "y" + "\t" * 20,
    "0123456789" * 50,
    "!!!???...,,,;;;:::---___***///\\\\\\|||",
    "text with <|endoftext|> inside, and <|fim_prefix|> too",
    "CamelCaseWordsAndHTTPServerXMLParser getHTTPResponseCode",
    "tab\tseparated\tvalues\nand\r\rcarriage",
    "\x00\x01\x02 control \x7f chars \x1b[31m",
    "emoji😀without😀spaces😀between",
    "mixed123numbers456and789letters",
    "     \n     \n",
    "ŉ ǅ ǈ Ǳ ﬁ ﬂ ligatures",
]

POOLS = [
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "0123456789",
    " \t\n\r\u00a0\u2003\u3000",
    "'’\".,;:!?()[]{}<>-_/\\|@#$%^&*+=~`",
    "àâäéèêëïîôöùûüçœæÀÉÈÇñÑáíóúü¿¡",
    "日本語中文한국어テキスト",
    "😀👍🏽🇫🇷❤️‍🔥\u200d\ufe0f",
    "αβγδΑΒΓΔабвгдАБВГД",
    "\u0301\u0300\u0323\u0327",
]


def main():
    rng = random.Random(20261123)
    texts = HAND_WRITTEN + corpus_slices(rng, 20, 200) + random_strings(rng, POOLS)
    result = {"tiktoken": tiktoken.__version__, "texts": texts}
    for name in SPECS:
        enc = encoding(name)
        result[name] = [enc.encode_ordinary(t) for t in texts]
        # tiktoken's allowed-special path, on the texts that contain a special token.
        result[name + "/allowed_all"] = [
            enc.encode(t, allowed_special="all") for t in texts
        ]
    write_json_gz(OUT, result)
    print(f"{OUT}: {len(texts)} texts, {sum(len(t) for t in texts)} chars, "
          f"tiktoken {tiktoken.__version__}", file=sys.stderr)


if __name__ == "__main__":
    main()
