"""Near dedup by the Python peers on lmforge's generated corpus with planted near duplicates.

    cargo run --release -p lmforge-benches --bin clean-dedup -- write target/bench-data/synthetic.jsonl 50000
    benches/peers/setup.sh && target/peers/venv/bin/python benches/peers/minhash.py target/bench-data/synthetic.jsonl
    cargo run --release -p lmforge-benches --bin clean-dedup -- measure 50000   # ours, same corpus

Every peer gets what lmforge computes: word 5-gram shingles (lowercased alphanumeric runs), 128
permutations, 16 bands x 8 rows, candidates verified by estimated Jaccard >= 0.8, the first
document of a cluster kept (streamed: a document is dropped when it matches an earlier kept
one). Precision and recall are against the recorded similarity of each planted copy (>= 0.8 is
a true duplicate). One thread; shingling is timed with the library ("end to end") or not
("library only").
"""
import json
import re
import sys
import time

WORD = re.compile(r"[^\W_]+")


def shingles(text, n=5):
    words = WORD.findall(text.lower())
    if len(words) < n:
        return [" ".join(words)] if words else []
    return [" ".join(words[i:i + n]) for i in range(len(words) - n + 1)]


def score(docs, dropped):
    truth = {i for i, d in enumerate(docs) if d.get("jaccard") is not None and d["jaccard"] >= 0.8}
    hits = len(truth & dropped)
    return hits / max(len(dropped), 1), hits / max(len(truth), 1)


def datasketch_run(docs, sets):
    from datasketch import MinHash, MinHashLSH
    lsh = MinHashLSH(num_perm=128, params=(16, 8))
    dropped = set()
    start = time.perf_counter()
    for i, s in enumerate(sets):
        m = MinHash(num_perm=128, seed=1)
        m.update_batch([x.encode() for x in s])
        if any(m.jaccard(other) >= 0.8 for other in (lsh_keys[k] for k in lsh.query(m))):
            dropped.add(i)
        else:
            lsh.insert(i, m)
            lsh_keys[i] = m
    return dropped, time.perf_counter() - start


def rensa_run(docs, sets):
    from rensa import RMinHash, RMinHashLSH
    lsh = RMinHashLSH(threshold=0.8, num_perm=128, num_bands=16)
    kept = {}
    dropped = set()
    start = time.perf_counter()
    for i, s in enumerate(sets):
        m = RMinHash(num_perm=128, seed=1)
        m.update(s)
        if any(m.jaccard(kept[k]) >= 0.8 for k in lsh.query(m)):
            dropped.add(i)
        else:
            lsh.insert(i, m)
            kept[i] = m
    return dropped, time.perf_counter() - start


lsh_keys = {}

if __name__ == "__main__":
    path = sys.argv[1]
    docs = [json.loads(line) for line in open(path, encoding="utf-8")]
    mb = sum(len(d["text"].encode()) for d in docs) / 1e6
    start = time.perf_counter()
    sets = [shingles(d["text"]) for d in docs]
    shingle_seconds = time.perf_counter() - start
    print(f"{len(docs)} documents, {mb:.1f} MB; Python shingling {shingle_seconds:.2f} s")
    for name, run in [("rensa RMinHash + RMinHashLSH", rensa_run), ("datasketch MinHash + MinHashLSH", datasketch_run)]:
        dropped, seconds = run(docs, sets)
        p, r = score(docs, dropped)
        print(f"{name}: library only {len(docs) / seconds:,.0f} docs/s, end to end "
              f"{len(docs) / (seconds + shingle_seconds):,.0f} docs/s; precision {p:.4f} recall {r:.4f} "
              f"({len(dropped)} dropped)")
