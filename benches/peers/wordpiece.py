"""crates/wordpiece against Hugging Face `tokenizers`, side by side on the embedded corpus
(datasets/default, en+fr+es).

    cargo xtask fixtures && cargo build --workspace --all-targets  # lmforge-wordpiece is built at opt-level 3
    benches/peers/setup.sh
    target/peers/venv/bin/python benches/peers/wordpiece.py [--lmforge target/debug/lmforge]

Training a 30k vocabulary (lowercase, accents kept, min frequency 2, alphabet limit 1000,
BERT's five special tokens) on the same 90 % of the documents: Hugging Face's
`WordPieceTrainer` (through `BertWordPieceTokenizer`, BPE underneath) and `lmforge wordpiece
train` (likelihood: the ratio score, also at higher minimum frequencies, and the exact
likelihood gain). On the other 10 % (held
out), both tokenizers are run by Python `tokenizers` (which checks that it loads our
tokenizer.json and encodes it as `lmforge wordpiece encode` does): tokens per word (words as
BERT's pre-tokenizer cuts them) and the [UNK] rate.

Encoding with all-MiniLM-L6-v2's tokenizer, end to end from text, one thread: HF `encode_batch`
and `encode_batch_fast` (RAYON_NUM_THREADS=1), whole documents (truncation and padding off).
lmforge's encoding speed is the criterion bench `wordpiece/encode`
(`cargo bench -p lmforge-benches -- wordpiece/encode`). Prints a JSON summary; the numbers go
to docs/benchmarks.md.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

from bpe import ROOT, best_of, corpus
from vocabularies import FIXTURES

VOCAB = 30000
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def train_hf(train_file):
    from tokenizers import BertWordPieceTokenizer
    tok = BertWordPieceTokenizer(clean_text=True, handle_chinese_chars=True,
                                 strip_accents=False, lowercase=True)
    tok.train([train_file], vocab_size=VOCAB, min_frequency=2, limit_alphabet=1000,
              special_tokens=SPECIALS, show_progress=False)
    return tok


def train_lmforge(lmforge, train_file, out, min_frequency=2, score="ratio"):
    subprocess.run([lmforge, "wordpiece", "train", "--input", train_file, "--vocab-size",
                    str(VOCAB), "--lowercase", "--min-frequency", str(min_frequency),
                    "--score", score, "--output", out], check=True, stdout=subprocess.DEVNULL)
    with open(out.replace(".json", ".report.json")) as f:
        return json.load(f)


def held_out_stats(tok, texts):
    from tokenizers.pre_tokenizers import BertPreTokenizer
    encs = tok.encode_batch(texts, add_special_tokens=False)
    tokens = sum(len(e.ids) for e in encs)
    unk = tok.token_to_id("[UNK]")
    unks = sum(e.ids.count(unk) for e in encs)
    pre = BertPreTokenizer()
    words = sum(len(pre.pre_tokenize_str(tok.normalizer.normalize_str(t))) for t in texts)
    return {"tokens_per_word": round(tokens / words, 4), "unk_rate_pct": round(100 * unks / tokens, 4),
            "tokens": tokens, "words": words}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lmforge", default=os.path.join(ROOT, "target", "debug", "lmforge"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--hf-encode", nargs=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.hf_encode:
        from tokenizers import Tokenizer
        tok, texts = Tokenizer.from_file(args.hf_encode[0]), corpus()
        tok.no_truncation()
        tok.no_padding()
        slow, _ = best_of(args.runs, lambda: tok.encode_batch(texts))
        fast, _ = best_of(args.runs, lambda: tok.encode_batch_fast(texts))
        print(json.dumps([slow, fast]))
        return
    import tokenizers
    from tokenizers import Tokenizer

    texts = corpus()
    train = [t for i, t in enumerate(texts) if i % 10 != 0]
    held_out = [t for i, t in enumerate(texts) if i % 10 == 0]
    mb = sum(len(t.encode()) for t in texts) / 1e6
    out = {"machine": f"{os.cpu_count()} cores", "corpus_mb": round(mb, 2),
           "train_mb": round(sum(len(t.encode()) for t in train) / 1e6, 2),
           "held_out_docs": len(held_out)}

    with tempfile.TemporaryDirectory() as work:
        # One document per line: HF's trainer reads lines, ours reads the same file.
        train_file = os.path.join(work, "train.txt")
        with open(train_file, "w") as f:
            for t in train:
                f.write(" ".join(t.split("\n")) + "\n")
        ours_json = os.path.join(work, "lmforge.json")
        seconds, report = best_of(args.runs, lambda: train_lmforge(args.lmforge, train_file, ours_json))
        out["train_lmforge_s"] = round(seconds, 3)
        out["train_lmforge_report"] = {k: report[k] for k in ("seconds", "merges", "alphabet", "vocab_size")}
        seconds, hf = best_of(args.runs, lambda: train_hf(train_file))
        out["train_hf_s"] = round(seconds, 3)

        ours = Tokenizer.from_file(ours_json)
        out["held_out_hf"] = held_out_stats(hf, held_out)
        out["held_out_lmforge"] = held_out_stats(ours, held_out)
        for mf in (5, 20, 50, 100):
            path = os.path.join(work, f"lmforge-mf{mf}.json")
            train_lmforge(args.lmforge, train_file, path, mf)
            out[f"held_out_lmforge_min_frequency_{mf}"] = held_out_stats(Tokenizer.from_file(path), held_out)
        gain_json = os.path.join(work, "lmforge-gain.json")
        seconds, _ = best_of(args.runs, lambda: train_lmforge(args.lmforge, train_file, gain_json, 2, "gain"))
        out["train_lmforge_gain_s"] = round(seconds, 3)
        out["held_out_lmforge_gain"] = held_out_stats(Tokenizer.from_file(gain_json), held_out)

        # Python tokenizers and `lmforge wordpiece encode` give the same ids for our file.
        lines = [line for t in held_out for line in t.split("\n") if line]
        lines_file = os.path.join(work, "lines.txt")
        with open(lines_file, "w") as f:
            f.write("\n".join(lines) + "\n")
        ids = subprocess.run([args.lmforge, "wordpiece", "encode", "--tokenizer", ours_json,
                              "--input", lines_file],
                             check=True, capture_output=True, text=True).stdout.splitlines()
        py = [" ".join(map(str, e.ids)) for e in ours.encode_batch(lines)]
        out["python_tokenizers_identical_lines"] = sum(a == b for a, b in zip(ids, py))
        out["python_tokenizers_lines"] = len(lines)

        # HF's thread pool is sized once per process: one thread needs a fresh process.
        env = dict(os.environ, RAYON_NUM_THREADS="1", RAYON_RS_NUM_CPUS="1")
        minilm = os.path.join(FIXTURES, "minilm-tokenizer.json")
        hf_run = subprocess.run([sys.executable, __file__, "--hf-encode", minilm],
                                env=env, check=True, capture_output=True, text=True)
        slow, fast = json.loads(hf_run.stdout)
        out["encode_hf_batch_one_thread_mb_s"] = round(mb / slow, 2)
        out["encode_hf_batch_fast_one_thread_mb_s"] = round(mb / fast, 2)
        out["versions"] = {"tokenizers": tokenizers.__version__}
    json.dump(out, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
