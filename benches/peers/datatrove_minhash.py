"""datatrove's own MinHash pipeline against `lmforge clean --ranks`, end to end, same corpus.

    cargo build --workspace --all-targets
    target/debug/clean-dedup write target/bench-data/synthetic-200k.jsonl 200000
    benches/peers/setup.sh
    target/peers/venv/bin/python benches/peers/datatrove_minhash.py \
        target/bench-data/synthetic-200k.jsonl --workers 2

The corpus (lmforge_clean::synthetic: planted near copies with their exact Jaccard similarity)
is cut into 8 jsonl files, because datatrove's JsonlReader shares files, not bytes, among
tasks. Both sides then run the whole job from those files to deduplicated jsonl files:

- datatrove 0.10: its four chained LocalPipelineExecutors (JsonlReader -> MinhashDedupSignature
  on `workers` tasks; MinhashDedupBuckets, one task per band; MinhashDedupCluster, one task;
  JsonlReader -> MinhashDedupFilter -> JsonlWriter on `workers` tasks), `workers` processes;
  word 5-grams after its text normalisation, split on whitespace (a WordTokenizer of ours:
  its default English tokenizer needs NLTK's punkt data, a download), 16 buckets x 8 hashes,
  64-bit xxhash.
- lmforge: `lmforge clean --ranks W --executor local` (its six job arrays: signatures, exact,
  buckets, cluster, filter, merge) with only dedup on (`--skip language,cleaning,quality
  --min-chars 0`), word 5-grams, 128 permutations, 16 bands x 8 rows, candidates verified at
  0.8. Then the same with one rank and one thread, and one rank pinned to one core, for the
  speed-up of two ranks on two cores.

Precision and recall are over documents, against the recorded similarity (>= 0.8 is a
duplicate). Wall times include process start-up and every file written.
"""
import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from datatrove.utils.word_tokenizers import WordTokenizer


class Whitespace(WordTokenizer):
    """datatrove's text normalisation has already lowercased and stripped punctuation."""

    def word_tokenize(self, text):
        return text.split()

    def sent_tokenize(self, text):
        return [text]

    def span_tokenize(self, text):
        return [(0, len(text))]


def split_corpus(path, folder, files):
    folder.mkdir(parents=True, exist_ok=True)
    lines = Path(path).read_bytes().splitlines(keepends=True)
    per = (len(lines) + files - 1) // files
    for i in range(files):
        (folder / f"part-{i:02}.jsonl").write_bytes(b"".join(lines[i * per:(i + 1) * per]))
    return [json.loads(line) for line in lines]


def truth(docs):
    return {d["id"] for d in docs if d.get("jaccard") is not None and d["jaccard"] >= 0.8}


def score(docs, dropped):
    t = truth(docs)
    hits = len(t & dropped)
    return hits / max(len(dropped), 1), hits / max(len(t), 1)


def datatrove(inputs, work, workers):
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupBuckets,
                                                  MinhashDedupCluster, MinhashDedupFilter,
                                                  MinhashDedupSignature)
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.hashing import HashConfig

    config = MinhashConfig(n_grams=5, num_buckets=16, hashes_per_bucket=8, seed=1,
                           hash_config=HashConfig(precision=64, hash_fc="xxhash"))
    tok = Whitespace("en")
    logs = work / "logs"
    s1 = LocalPipelineExecutor(
        pipeline=[JsonlReader(str(inputs)),
                  MinhashDedupSignature(output_folder=str(work / "signatures"), config=config,
                                        language=tok)],
        tasks=workers, workers=workers, logging_dir=str(logs / "signatures"))
    s2 = LocalPipelineExecutor(
        pipeline=[MinhashDedupBuckets(input_folder=str(work / "signatures"),
                                      output_folder=str(work / "buckets"), config=config)],
        tasks=config.num_buckets, workers=workers, logging_dir=str(logs / "buckets"), depends=s1)
    s3 = LocalPipelineExecutor(
        pipeline=[MinhashDedupCluster(input_folder=str(work / "buckets"),
                                      output_folder=str(work / "remove_ids"), config=config)],
        tasks=1, logging_dir=str(logs / "clusters"), depends=s2)
    s4 = LocalPipelineExecutor(
        pipeline=[JsonlReader(str(inputs)),
                  MinhashDedupFilter(input_folder=str(work / "remove_ids"),
                                     exclusion_writer=JsonlWriter(str(work / "removed"))),
                  JsonlWriter(str(work / "output"))],
        tasks=workers, workers=workers, logging_dir=str(logs / "filter"), depends=s3)
    start = time.perf_counter()
    s4.run()
    seconds = time.perf_counter() - start
    dropped = set()
    for f in sorted((work / "removed").glob("*.jsonl.gz")):
        with gzip.open(f, "rt", encoding="utf-8") as lines:
            dropped.update(json.loads(line)["id"] for line in lines)
    return dropped, seconds


def lmforge(lmforge_bin, inputs, work, ranks, threads, one_core=False):
    out = work / "out"
    # One core for the whole process (`taskset -c 0`): a rank's reader thread otherwise
    # overlaps the hashing on the second core, and one rank "with one thread" uses 1.2 cores.
    pin = ["taskset", "-c", "0"] if one_core else []
    args = pin + [lmforge_bin, "clean", "--input", *sorted(str(p) for p in inputs.glob("*.jsonl")),
            "--output", str(out), "--work", str(work / "work"), "--ranks", str(ranks),
            "--executor", "local", "--dedup", "minhash", "--minhash-threshold", "0.8",
            "--minhash-perms", "128", "--bands", "16", "--rows", "8", "--ngram", "5",
            "--skip", "language,cleaning,quality", "--min-chars", "0", "--id-field", "id"]
    if threads:
        args += ["--threads", str(threads)]
    start = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    dropped = {json.loads(line)["id"] for line in open(out / "duplicates.jsonl", encoding="utf-8")}
    return dropped, seconds


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("corpus")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--work", default="target/bench-data/datatrove-vs-lmforge")
    parser.add_argument("--lmforge", default="target/debug/lmforge")
    parser.add_argument("--json", help="write the results here")
    a = parser.parse_args()
    work = Path(a.work)
    shutil.rmtree(work, ignore_errors=True)
    inputs = work / "inputs"
    docs = split_corpus(a.corpus, inputs, 8)
    mb = sum(len(d["text"].encode()) for d in docs) / 1e6
    print(f"{len(docs)} documents, {mb:.1f} MB in 8 files; {len(truth(docs))} true duplicates; "
          f"{a.workers} workers, {os.cpu_count()} cores")
    results = {"documents": len(docs), "mb": mb, "workers": a.workers}
    runs = [
        ("datatrove", lambda w: datatrove(inputs, w, a.workers)),
        (f"lmforge {a.workers} ranks", lambda w: lmforge(a.lmforge, inputs, w, a.workers, 0)),
        ("lmforge 1 rank, 1 thread", lambda w: lmforge(a.lmforge, inputs, w, 1, 1)),
        ("lmforge 1 rank on one core", lambda w: lmforge(a.lmforge, inputs, w, 1, 1, True)),
    ]
    for name, run in runs:
        dropped, seconds = run(work / name.replace(" ", "-").replace(",", ""))
        p, r = score(docs, dropped)
        results[name] = {"seconds": seconds, "docs_per_s": len(docs) / seconds,
                         "precision": p, "recall": r, "dropped": len(dropped)}
        print(f"{name}: {seconds:.2f} s = {len(docs) / seconds:,.0f} docs/s; precision {p:.4f} "
              f"recall {r:.4f} ({len(dropped)} dropped)", flush=True)
    ours = results[f"lmforge {a.workers} ranks"]
    print(f"lmforge {a.workers} ranks vs datatrove: "
          f"{ours['docs_per_s'] / results['datatrove']['docs_per_s']:.1f}x the documents per second; "
          f"vs one rank with one thread: "
          f"{results['lmforge 1 rank, 1 thread']['seconds'] / ours['seconds']:.2f}x, "
          f"vs one rank on one core: "
          f"{results['lmforge 1 rank on one core']['seconds'] / ours['seconds']:.2f}x")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
