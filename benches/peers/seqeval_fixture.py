"""Entity-level scores as `seqeval` (PyPI, 1.2.2, its default lenient IOB chunking) computes
them, on seeded random tag sequences, written for lmforge-train's `ner` tests:

    target/peers/venv/bin/python benches/peers/seqeval_fixture.py

crates/train/tests/fixtures/seqeval.json: a list of cases, each the true and predicted tag
sequences (lists of sentences) and seqeval's micro precision, recall and F1.
"""
import json
import os
import random

from seqeval.metrics import f1_score, precision_score, recall_score

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "crates", "train", "tests", "fixtures", "seqeval.json")

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "I-MISC"]


def sentence(rng):
    return [rng.choice(TAGS) for _ in range(rng.randint(1, 12))]


def main():
    rng = random.Random(1234)
    cases = []
    for _ in range(60):
        n = rng.randint(1, 6)
        y_true = [sentence(rng) for _ in range(n)]
        # Predictions: the truth with some tags changed, so that scores are neither 0 nor 1.
        y_pred = [[t if rng.random() < 0.7 else rng.choice(TAGS) for t in s] for s in y_true]
        cases.append({
            "true": y_true,
            "pred": y_pred,
            "precision": precision_score(y_true, y_pred),
            "recall": recall_score(y_true, y_pred),
            "f1": f1_score(y_true, y_pred),
        })
    with open(OUT, "w") as f:
        json.dump(cases, f, indent=0)
    print("wrote", OUT, len(cases), "cases")


if __name__ == "__main__":
    main()
