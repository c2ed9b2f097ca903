"""Megatron-LM's own output for crates/dataset's tests (megatron-core from PyPI, CPU only).

Writes, under crates/dataset/test_data/:
  megatron/u16.{bin,idx}, megatron/i32.{bin,idx}: datasets written by Megatron's
      IndexedDatasetBuilder for known token ids (add_item/end_document, add_document with
      several sequences, an empty document);
  megatron_reference.json: those ids, and for a corpus of seeded random documents
      (megatron/gpt.{bin,idx}) the document, sample and shuffle indices and the first samples
      (tokens, labels, loss mask, position ids, attention mask) that Megatron's GPTDataset
      builds for several configurations.

    benches/peers/setup.sh && target/peers/venv/bin/python benches/peers/megatron_reference.py
"""
import json
import os
import shutil
import sys
import tempfile

import numpy
import torch

from megatron.core.datasets.indexed_dataset import IndexedDataset, IndexedDatasetBuilder
from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
OUT = os.path.join(ROOT, "crates", "dataset", "test_data")


class Tokenizer:
    """The attributes GPTDataset reads."""

    def __init__(self, vocab_size, eod, pad=None):
        self.vocab_size = vocab_size
        self.eod = eod
        if pad is not None:
            self.pad = pad
        self.unique_identifiers = {"class": "Tokenizer", "vocab_size": vocab_size}


def format_fixtures():
    docs = {
        "u16": (numpy.uint16, [[[1, 2, 3]], [[65499, 0], [7]], [], [[42]]]),
        "i32": (numpy.int32, [[[70000, 1]], [[2, 3, 4, 5]], [], [[2**31 - 1]]]),
    }
    out = {}
    for name, (dtype, documents) in docs.items():
        prefix = os.path.join(OUT, "megatron", name)
        builder = IndexedDatasetBuilder(prefix + ".bin", dtype=dtype)
        for i, doc in enumerate(documents):
            if i % 2 == 0:
                for seq in doc:
                    builder.add_item(torch.tensor(seq, dtype=torch.int64))
                builder.end_document()
            else:
                flat = [t for seq in doc for t in seq]
                builder.add_document(flat, [len(s) for s in doc])
        builder.finalize(prefix + ".idx")
        out[name] = documents
    return out


def gpt_fixtures():
    rng = numpy.random.RandomState(1234)
    prefix = os.path.join(OUT, "megatron", "gpt")
    eod = 999
    builder = IndexedDatasetBuilder(prefix + ".bin", dtype=numpy.uint16)
    for _ in range(60):
        n = int(rng.randint(0, 40))
        ids = rng.randint(0, 990, size=n).tolist()
        if n and rng.rand() < 0.3:
            ids[int(rng.randint(0, n))] = eod
        if n:
            ids.append(eod)
        builder.add_document(ids, [len(ids)] if ids else [])
    builder.finalize(prefix + ".idx")

    cases = []
    configs = [
        dict(name="default", seq=16, seed=1234, split="8,1,1", sizes=[100, 20, None],
             extra=True, eod_mask_loss=False, reset_position_ids=False, reset_attention_mask=False,
             drop_last_valid=True, pad=None),
        dict(name="eod_options", seq=8, seed=7, split="90,8,2", sizes=[500, 10, 3],
             extra=True, eod_mask_loss=True, reset_position_ids=True, reset_attention_mask=True,
             drop_last_valid=False, pad=998),
        dict(name="no_extra_token", seq=12, seed=42, split="90,10", sizes=[50, None, None],
             extra=False, eod_mask_loss=False, reset_position_ids=True, reset_attention_mask=False,
             drop_last_valid=True, pad=None),
    ]
    for c in configs:
        cache = tempfile.mkdtemp()
        config = GPTDatasetConfig(
            random_seed=c["seed"],
            sequence_length=c["seq"],
            blend=([prefix], None),
            split=c["split"],
            path_to_cache=cache,
            tokenizer=Tokenizer(1000, eod, c["pad"]),
            reset_position_ids=c["reset_position_ids"],
            reset_attention_mask=c["reset_attention_mask"],
            eod_mask_loss=c["eod_mask_loss"],
            drop_last_partial_validation_sequence=c["drop_last_valid"],
            add_extra_token_to_sequence=c["extra"],
            create_attention_mask=True,
        )
        datasets = BlendedMegatronDatasetBuilder(
            GPTDataset, c["sizes"], lambda: True, config
        ).build()
        splits = {}
        for split_name, ds in zip(["train", "valid", "test"], datasets):
            if ds is None:
                continue
            samples = []
            for i in range(min(len(ds), 40)):
                item = ds[i]
                samples.append({
                    "tokens": item["tokens"].tolist(),
                    "labels": item["labels"].tolist(),
                    "loss_mask": item["loss_mask"].tolist(),
                    "position_ids": item["position_ids"].tolist(),
                    "attention_mask": item["attention_mask"][0].int().tolist(),
                })
            splits[split_name] = {
                "documents": [int(ds.indices[0]), int(ds.indices[-1]) + 1] if len(ds.indices) else [0, 0],
                "num_samples": ds.num_samples,
                "document_index": ds.document_index.tolist(),
                "sample_index": ds.sample_index.tolist(),
                "shuffle_index": ds.shuffle_index.tolist(),
                "samples": samples,
            }
        shutil.rmtree(cache)
        cases.append({"config": c, "splits": splits})
    return cases


def blend_fixture():
    """Two datasets mixed 0.3 / 0.7 (Megatron's --data-path 0.3 a 0.7 b)."""
    rng = numpy.random.RandomState(99)
    other = os.path.join(OUT, "megatron", "blend_b")
    builder = IndexedDatasetBuilder(other + ".bin", dtype=numpy.uint16)
    for _ in range(30):
        n = int(rng.randint(1, 50))
        ids = (rng.randint(0, 990, size=n) + 0).tolist() + [999]
        builder.add_document(ids, [len(ids)])
    builder.finalize(other + ".idx")
    first = os.path.join(OUT, "megatron", "gpt")
    cache = tempfile.mkdtemp()
    # BlendedDataset asks the process group for its rank when it writes its cache.
    torch.distributed.init_process_group("gloo", init_method="tcp://127.0.0.1:29533", rank=0,
                                         world_size=1)
    config = GPTDatasetConfig(
        random_seed=5, sequence_length=8, blend=([first, other], [0.3, 0.7]), split="8,1,1",
        path_to_cache=cache, tokenizer=Tokenizer(1000, 999), reset_position_ids=False,
        reset_attention_mask=False, eod_mask_loss=False,
    )
    datasets = BlendedMegatronDatasetBuilder(GPTDataset, [120, 10, 4], lambda: True, config).build()
    out = {"prefixes": ["megatron/gpt", "megatron/blend_b"], "weights": [0.3, 0.7], "seq": 8,
           "seed": 5, "split": "8,1,1", "sizes": [120, 10, 4], "splits": {}}
    for name, ds in zip(["train", "valid", "test"], datasets):
        out["splits"][name] = {
            "dataset_index": ds.dataset_index.tolist(),
            "dataset_sample_index": ds.dataset_sample_index.tolist(),
            "tokens": [ds[i]["tokens"].tolist() for i in range(len(ds))],
        }
    shutil.rmtree(cache)
    torch.distributed.destroy_process_group()
    return out


def shuffles():
    out = []
    for seed, n in [(0, 10), (1, 1000), (1234, 70000), (2**32 - 1, 3)]:
        x = numpy.arange(n, dtype=numpy.int64)
        numpy.random.RandomState(seed).shuffle(x)
        out.append({"seed": seed, "n": n, "head": x[:50].tolist(), "sum_sq_pos": int((x * numpy.arange(n)).sum() % (2**61 - 1))})
    return out


def main():
    os.makedirs(os.path.join(OUT, "megatron"), exist_ok=True)
    reference = {
        "megatron_core": __import__("megatron.core").core.__version__ if hasattr(__import__("megatron.core").core, "__version__") else "unknown",
        "format": format_fixtures(),
        "gpt": gpt_fixtures(),
        "shuffles": shuffles(),
        "blend": blend_fixture(),
    }
    with open(os.path.join(OUT, "megatron_reference.json"), "w") as f:
        json.dump(reference, f, separators=(",", ":"))
    print("wrote", OUT)


if __name__ == "__main__":
    main()
