"""SentencePiece-style BPE tokenizer.json fixtures for lmforge-bpe's `MetaspaceBpe`, written
once with Hugging Face `tokenizers` and committed:

    target/peers/venv/bin/python benches/peers/tokenizer_fixtures.py

The tests load each file with the Rust `tokenizers` crate and with ours and compare ids and
decoded text on arbitrary strings.

1. spm-llama.json: as transformers converts Llama 2's and Mistral's SentencePiece models: a
   `Prepend("▁")` + `Replace(" ", "▁")` normalizer, no pre-tokenizer, BPE with `byte_fallback`
   (`<0x00>`…`<0xFF>` at ids 3-258, as Llama's), `fuse_unk`, decoder Replace, ByteFallback,
   Fuse, Strip; `<unk>`, `<s>`, `</s>` special, plus `<mask>` with lstrip and rstrip.
2. spm-normalized.json: spm-llama.json with two added tokens matched after normalization
   (`tortue`, and `</p>` special), as Hugging Face matches them: their content normalized too.
3. spm-metaspace.json: the same vocabulary behind a `Metaspace` pre-tokenizer
   (prepend_scheme "first", split) and a `ByteFallback` + `Metaspace` decoder, as newer
   conversions write it.
"""
import json
import os

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, trainers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "crates", "bpe", "tests", "fixtures")

TEXTS = [
    "Il était une fois une tortue qui vivait dans un jardin près de la rivière.",
    "Érase una vez un gato que vivía en una casa grande con muchas ventanas.",
    "The quick brown fox jumps over the lazy dog, again and again.",
    "Les enfants jouaient dans la cour pendant que les parents préparaient le dîner.",
    "El niño corrió por el parque y encontró una pelota roja bajo el árbol.",
    "Numbers like 1, 22, 333 and 4444 appear in text; so do dates: 2026-12-07.",
]


def main():
    specials = ["<unk>", "<s>", "</s>"]
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([
        decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0),
    ])
    trainer = trainers.BpeTrainer(vocab_size=600, min_frequency=2,
                                  special_tokens=specials + byte_tokens, show_progress=False)
    tok.train_from_iterator(TEXTS * 20, trainer)
    tok.add_special_tokens([AddedToken("<mask>", lstrip=True, rstrip=True, normalized=False)])
    data = json.loads(tok.to_str())
    # The byte tokens are vocabulary, not added tokens, in Llama's files.
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] not in byte_tokens]
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "spm-llama.json"), "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, indent=1)
    # Added tokens matched after normalization (their content normalized too: "▁tortue").
    normalized = Tokenizer.from_str(json.dumps(data))
    normalized.add_tokens([AddedToken("tortue", normalized=True),
                           AddedToken("</p>", normalized=True, special=True)])
    with open(os.path.join(OUT, "spm-normalized.json"), "w", encoding="utf-8") as f:
        json.dump(json.loads(normalized.to_str()), f, ensure_ascii=False, indent=1)
    data["normalizer"] = None
    data["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": True}
    data["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "ByteFallback"},
        {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": True},
    ]}
    with open(os.path.join(OUT, "spm-metaspace.json"), "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, indent=1)
    # Both must load in tokenizers as they are.
    for name in ["spm-llama.json", "spm-metaspace.json", "spm-normalized.json"]:
        t = Tokenizer.from_file(os.path.join(OUT, name))
        print(name, t.get_vocab_size(), t.encode("Il était une fois 日本 <mask> x").tokens)


if __name__ == "__main__":
    main()
