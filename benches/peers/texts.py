"""What the oracle-fixture scripts share: seeded test texts drawn from the embedded corpus and
from pools of characters, and a gzip writer whose bytes depend only on the content."""

import gzip
import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def corpus_slices(rng, per_language, shortest):
    """`per_language` seeded slices (`shortest` to 1500 characters) of en, fr and es documents."""
    out = []
    for lang in ("en", "fr", "es"):
        with gzip.open(os.path.join(ROOT, "datasets", "default", f"{lang}.jsonl.gz"), "rt") as f:
            docs = [json.loads(line)["text"] for line in f]
        for _ in range(per_language):
            doc = docs[rng.randrange(len(docs))]
            start = rng.randrange(max(1, len(doc) - 1500))
            out.append(doc[start:start + rng.randrange(shortest, 1500)])
    return out


def random_strings(rng, pools, count=60):
    """`count` seeded strings of 1 to 299 characters drawn from one to three of `pools`."""
    out = []
    for _ in range(count):
        chosen = rng.sample(pools, rng.randrange(1, 4))
        chars = "".join(chosen)
        out.append("".join(rng.choice(chars) for _ in range(rng.randrange(1, 300))))
    return out


def write_json_gz(path, value):
    """Compact JSON, gzipped with no timestamp: same value, same bytes."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    data = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
    with open(path, "wb") as f:
        with gzip.GzipFile(fileobj=f, mode="wb", mtime=0) as gz:
            gz.write(data)
