"""crates/bpe against its peers, side by side on the embedded corpus (datasets/default, en+fr+es).

    cargo xtask fixtures && cargo build --workspace --all-targets  # lmforge-bpe is built at opt-level 3
    benches/peers/setup.sh
    target/peers/venv/bin/python benches/peers/bpe.py [--lmforge target/debug/lmforge]

Training (32k vocabulary, min frequency 2, `<|endoftext|>`): Hugging Face `tokenizers`
(BpeTrainer, ByteLevel), bpeasy, sentencepiece (BPE, char-level with byte fallback), and
`lmforge bpe train`, each on the same 90 % of the documents; bytes per token on the other 10 %
(held out) for HF and lmforge, both encoded by Python `tokenizers` (which also checks that it
loads our tokenizer.json and encodes it exactly as `lmforge bpe encode` does).

Encoding with GPT-2's vocabulary, one thread: tiktoken (`encode_ordinary` loop and
`encode_ordinary_batch`), HF `tokenizers` (`encode_batch`, RAYON_NUM_THREADS=1, on the
tokenizer.json `lmforge bpe convert` writes from gpt2.tiktoken). lmforge's own encoding speed
is the criterion bench `bpe/encode` (`cargo bench -p lmforge-benches -- bpe/encode`).
Prints a JSON summary; the numbers go to docs/benchmarks.md.
"""

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time

from vocabularies import FIXTURES, GPT2_PATTERN, ROOT, encoding

VOCAB = 32000


def corpus():
    texts = []
    for lang in ("en", "fr", "es"):
        with gzip.open(os.path.join(ROOT, "datasets", "default", f"{lang}.jsonl.gz"), "rt") as f:
            texts += [json.loads(line)["text"] for line in f]
    return texts


def best_of(n, f):
    times = []
    for _ in range(n):
        t = time.perf_counter()
        result = f()
        times.append(time.perf_counter() - t)
    return min(times), result


def train_hf(texts):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB, min_frequency=2, special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def train_bpeasy(texts):
    import bpeasy
    return bpeasy.train_bpe(iter(texts), GPT2_PATTERN, 128, VOCAB)


def train_sentencepiece(texts, workdir):
    import sentencepiece as spm
    lines = [line for t in texts for line in t.split("\n") if line.strip()]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_prefix=os.path.join(workdir, "sp"),
        model_type="bpe", vocab_size=VOCAB, byte_fallback=True, character_coverage=1.0,
        num_threads=os.cpu_count(), minloglevel=2, max_sentence_length=1 << 16)


def train_lmforge(lmforge, train_file, out):
    subprocess.run([lmforge, "bpe", "train", "--input", train_file, "--vocab-size", str(VOCAB),
                    "--output", out], check=True, stdout=subprocess.DEVNULL)
    with open(out.replace(".json", ".report.json")) as f:
        return json.load(f)


def bytes_per_token(tok, texts):
    n = sum(len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False))
    return sum(len(t.encode()) for t in texts) / n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lmforge", default=os.path.join(ROOT, "target", "debug", "lmforge"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--hf-encode", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.hf_encode:
        from tokenizers import Tokenizer
        tok, texts = Tokenizer.from_file(args.hf_encode[0]), corpus()
        seconds, encs = best_of(args.runs, lambda: tok.encode_batch(texts, add_special_tokens=False))
        with open(args.hf_encode[1], "w") as f:
            json.dump([e.ids for e in encs], f)
        print(seconds)
        return
    import tiktoken
    import tokenizers
    from tokenizers import Tokenizer

    texts = corpus()
    train = [t for i, t in enumerate(texts) if i % 10 != 0]
    held_out = [t for i, t in enumerate(texts) if i % 10 == 0]
    mb = sum(len(t.encode()) for t in texts) / 1e6
    train_mb = sum(len(t.encode()) for t in train) / 1e6
    out = {"machine": f"{os.cpu_count()} cores", "corpus_mb": round(mb, 2),
           "train_mb": round(train_mb, 2), "held_out_docs": len(held_out)}

    with tempfile.TemporaryDirectory() as work:
        train_file = os.path.join(work, "train.jsonl")
        with open(train_file, "w") as f:
            for t in train:
                f.write(json.dumps({"text": t}) + "\n")
        ours_json = os.path.join(work, "lmforge.json")
        seconds, report = best_of(args.runs, lambda: train_lmforge(args.lmforge, train_file, ours_json))
        out["train_lmforge_s"] = round(seconds, 3)
        out["train_lmforge_report_s"] = round(report["seconds"], 3)
        seconds, hf = best_of(args.runs, lambda: train_hf(train))
        out["train_hf_s"] = round(seconds, 3)
        seconds, _ = best_of(args.runs, lambda: train_bpeasy(train))
        out["train_bpeasy_s"] = round(seconds, 3)
        seconds, _ = best_of(args.runs, lambda: train_sentencepiece(train, work))
        out["train_sentencepiece_s"] = round(seconds, 3)

        ours = Tokenizer.from_file(ours_json)
        out["held_out_bytes_per_token_hf"] = round(bytes_per_token(hf, held_out), 4)
        out["held_out_bytes_per_token_lmforge"] = round(bytes_per_token(ours, held_out), 4)
        out["held_out_bpt_gap_pct"] = round(
            100 * (out["held_out_bytes_per_token_lmforge"] / out["held_out_bytes_per_token_hf"] - 1), 3)

        # Python tokenizers and `lmforge bpe encode` give the same ids for our tokenizer.json.
        lines = [line for t in held_out for line in t.split("\n") if line]
        lines_file = os.path.join(work, "lines.txt")
        with open(lines_file, "w") as f:
            f.write("\n".join(lines) + "\n")
        ids = subprocess.run([args.lmforge, "bpe", "encode", "--tokenizer", ours_json,
                              "--special", "text", "--input", lines_file],
                             check=True, capture_output=True, text=True).stdout.splitlines()
        py = [" ".join(map(str, e.ids)) for e in ours.encode_batch(lines, add_special_tokens=False)]
        out["python_tokenizers_identical_lines"] = sum(a == b for a, b in zip(ids, py))
        out["python_tokenizers_lines"] = len(lines)

        # Encoding with GPT-2's vocabulary.
        gpt2_json = os.path.join(work, "gpt2.json")
        subprocess.run([args.lmforge, "bpe", "convert", "--tokenizer",
                        os.path.join(FIXTURES, "gpt2.tiktoken"), "--output", gpt2_json],
                       check=True, stdout=subprocess.DEVNULL)
        enc = encoding("gpt2")
        seconds, tk_ids = best_of(args.runs, lambda: [enc.encode_ordinary(t) for t in texts])
        out["encode_tiktoken_loop_mb_s"] = round(mb / seconds, 2)
        seconds, _ = best_of(args.runs, lambda: enc.encode_ordinary_batch(texts, num_threads=1))
        out["encode_tiktoken_batch1_mb_s"] = round(mb / seconds, 2)
        seconds, _ = best_of(args.runs, lambda: enc.encode_ordinary_batch(texts, num_threads=os.cpu_count()))
        out["encode_tiktoken_batch_all_cores_mb_s"] = round(mb / seconds, 2)
        for name in ("cl100k_base", "o200k_base"):
            other = encoding(name)
            seconds, _ = best_of(args.runs, lambda: [other.encode_ordinary(t) for t in texts])
            out[f"encode_tiktoken_{name}_loop_mb_s"] = round(mb / seconds, 2)

        # HF's thread pool is sized once per process: one thread needs a fresh process.
        ids_file = os.path.join(work, "hf_ids.json")
        env = dict(os.environ, RAYON_NUM_THREADS="1", RAYON_RS_NUM_CPUS="1")
        hf = subprocess.run([sys.executable, __file__, "--hf-encode", gpt2_json, ids_file],
                            env=env, check=True, capture_output=True, text=True)
        out["encode_hf_batch_one_thread_mb_s"] = round(mb / float(hf.stdout), 2)
        with open(ids_file) as f:
            out["gpt2_hf_equals_tiktoken"] = json.load(f) == tk_ids
        out["versions"] = {"tiktoken": tiktoken.__version__, "tokenizers": tokenizers.__version__}
    json.dump(out, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
