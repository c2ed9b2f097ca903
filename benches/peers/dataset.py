"""Corpus conversion and GPT sample reading, lmforge against the Python way, side by side.

The job: the embedded corpus (datasets/default/*.jsonl.gz) tokenized with a 32k byte-level BPE
(target/bench-data/bpe32k.json, written by `cargo bench -p lmforge-benches -- dataset`),
end-of-document appended, written as Megatron's .bin/.idx.

  peer     Hugging Face `tokenizers` + Megatron's IndexedDatasetBuilder, one process (what
           preprocess_data.py does per worker), per document (one thread) and with
           encode_batch (the Rust pool on every core);
  lmforge  `lmforge convert --workers 1` and with every core.

Then the checks that matter more than speed: Megatron's IndexedDataset reads lmforge's files
token for token equal to Hugging Face's ids, and the two conversions are byte-identical; and
random GPT samples read through Megatron's GPTDataset vs `lmforge dataset samples`.

    benches/peers/setup.sh && target/peers/venv/bin/python benches/peers/dataset.py
"""
import gzip
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy
from tokenizers import Tokenizer
from megatron.core.datasets.indexed_dataset import IndexedDataset, IndexedDatasetBuilder, DType

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
FILES = [os.path.join(ROOT, "datasets", "default", f"{l}.jsonl.gz") for l in ["en", "fr", "es"]]
TOKENIZER = os.path.join(ROOT, "target", "bench-data", "bpe32k.json")
LMFORGE = os.path.join(ROOT, "target", "debug", "lmforge")


def lines():
    for path in FILES:
        with gzip.open(path, "rb") as f:
            for line in f:
                yield line


def python_convert(tok, prefix, batch):
    eod = tok.token_to_id("<|endoftext|>")
    dtype = DType.optimal_dtype(tok.get_vocab_size())
    builder = IndexedDatasetBuilder(prefix + ".bin", dtype=dtype)
    start = time.perf_counter()
    nbytes = 0
    pending = []

    def flush():
        encodings = tok.encode_batch([t for t in pending], add_special_tokens=False)
        for e in encodings:
            ids = e.ids
            if ids:
                ids = ids + [eod]
            builder.add_document(ids, [len(ids)] if ids else [])
        pending.clear()

    for line in lines():
        nbytes += len(line)
        text = json.loads(line)["text"]
        if batch:
            pending.append(text)
            if len(pending) == 64:
                flush()
        else:
            ids = tok.encode(text, add_special_tokens=False).ids
            if ids:
                ids = ids + [eod]
            builder.add_document(ids, [len(ids)] if ids else [])
    if pending:
        flush()
    builder.finalize(prefix + ".idx")
    return nbytes, time.perf_counter() - start


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def main():
    if not os.path.exists(TOKENIZER):
        sys.exit(f"{TOKENIZER} is missing: run `cargo bench -p lmforge-benches -- dataset` first")
    tmp = tempfile.mkdtemp()
    tok = Tokenizer.from_file(TOKENIZER)
    results = {}
    for name, batch in [("python-hf/one-thread", False), ("python-hf/encode_batch", True)]:
        nbytes, secs = python_convert(tok, os.path.join(tmp, name.replace("/", "_")), batch)
        results[name] = (nbytes, secs)
        print(f"{name:28s} {nbytes / 1e6 / secs:8.2f} MB/s ({secs:.2f} s, {nbytes / 1e6:.1f} MB)")
    for name, workers in [("lmforge/one-thread", "1"), ("lmforge/all-threads", "0")]:
        prefix = os.path.join(tmp, name.replace("/", "_"))
        subprocess.run([LMFORGE, "convert", "--input", *FILES, "--tokenizer", TOKENIZER,
                        "--output-prefix", prefix, "--append-eod", "--workers", workers],
                       check=True, capture_output=True)
        report = json.load(open(prefix + ".report.json"))
        results[name] = (report["bytes"], report["seconds"])
        print(f"{name:28s} {report['mb_per_s']:8.2f} MB/s ({report['seconds']:.2f} s)")
    print(f"one thread: lmforge / python-hf = "
          f"{results['python-hf/one-thread'][1] / results['lmforge/one-thread'][1]:.1f}x; "
          f"all threads: lmforge / python-hf encode_batch = "
          f"{results['python-hf/encode_batch'][1] / results['lmforge/all-threads'][1]:.1f}x")

    # Megatron reads lmforge's files token for token as Hugging Face's ids.
    ours = os.path.join(tmp, "lmforge_one-thread_text_document")
    theirs = os.path.join(tmp, "python-hf_one-thread")
    ds = IndexedDataset(ours)
    eod = tok.token_to_id("<|endoftext|>")
    n = 0
    for i, line in enumerate(lines()):
        want = tok.encode(json.loads(line)["text"], add_special_tokens=False).ids
        want = want + [eod] if want else []
        start, end = ds.document_indices[i], ds.document_indices[i + 1]
        got = numpy.concatenate([ds[j] for j in range(start, end)]).tolist() if end > start else []
        assert got == want, f"document {i} differs"
        n += len(got)
    print(f"Megatron's IndexedDataset read lmforge's {len(ds.document_indices) - 1} documents, "
          f"{n} tokens: identical to Hugging Face's ids")
    for ext in [".bin", ".idx"]:
        same = sha(ours + ext) == sha(theirs + ext)
        print(f"{ext}: lmforge and Megatron's builder wrote {'identical' if same else 'DIFFERENT'} bytes")
        assert same

    # Random GPT samples: Megatron's GPTDataset vs lmforge dataset samples.
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
    from megatron.core.datasets.utils import Split

    class Tok:
        vocab_size = tok.get_vocab_size()
        eod = tok.token_to_id("<|endoftext|>")
        unique_identifiers = {"class": "Tok"}

    config = GPTDatasetConfig(random_seed=1234, sequence_length=1024, blend=([ours], None),
                              split="1,0,0", path_to_cache=os.path.join(tmp, "cache"),
                              tokenizer=Tok(), reset_position_ids=False, reset_attention_mask=False,
                              eod_mask_loss=False)
    gpt = GPTDataset(ds, ours, numpy.arange(len(ds), dtype=numpy.int32), 100_000, Split.train, config)
    rng = numpy.random.RandomState(0)
    idx = rng.randint(0, len(gpt), size=2000)
    start = time.perf_counter()
    tokens = sum(int(gpt[int(i)]["tokens"].numel()) for i in idx)
    secs = time.perf_counter() - start
    print(f"megatron GPTDataset random samples: {tokens / secs / 1e6:.3f} M tokens/s (one thread)")
    out = subprocess.run([LMFORGE, "dataset", "samples", "--data-path", ours, "--seq-length", "1024",
                          "--split", "1,0,0", "--train-samples", "100000", "--micro-batch-size", "8",
                          "--batches", "2000", "--cache", os.path.join(tmp, "cache-ours")],
                         check=True, capture_output=True, text=True).stdout
    print("lmforge:", re.search(r"read .*", out).group(0))


if __name__ == "__main__":
    main()
