"""PyTorch eager and transformers on the shapes of `model-speed` (benches/src/bin/model_speed.rs).

    benches/peers/setup.sh
    target/peers/venv/bin/python benches/peers/model.py [--threads N]

forward:   GPT2LMHeadModel, gpt2-small config (12 × 768, 50,257 tokens), batch 8 × 256, no_grad,
           best of three after one warm-up.
generate:  GPT2LMHeadModel 6 × 384, 8192 tokens, 1024 positions; 16-token prompts, 128 new
           tokens, greedy, KV cache (`generate(do_sample=False, use_cache=True)`), batch 1 and 8.
positions: decode cost of one token after a prefix of 64 … 1000 tokens (16 steps with the cache).
Weights are random: speed does not depend on their values. One JSON object per measurement.
"""
import argparse
import json
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel


def tokens(batch, seq, vocab):
    return torch.tensor([[(b * 7919 + i * 104729) % vocab for i in range(seq)] for b in range(batch)])


def small():
    return GPT2LMHeadModel(GPT2Config(vocab_size=8192, n_positions=1024, n_embd=384, n_layer=6, n_head=6)).eval()


def forward():
    model = GPT2LMHeadModel(GPT2Config()).eval()
    x = tokens(8, 256, 50257)
    with torch.no_grad():
        model(x)
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            model(x)
            best = min(best, time.perf_counter() - start)
    print(json.dumps({"bench": "forward", "peer": "torch-eager", "batch": 8, "seq": 256,
                      "seconds": best, "tokens_per_s": 8 * 256 / best}))


def generate():
    model = small()
    for batch in (1, 8):
        x = tokens(batch, 16, 8192)
        mask = torch.ones_like(x)
        kwargs = dict(attention_mask=mask, do_sample=False, use_cache=True, pad_token_id=0,
                      eos_token_id=None)
        with torch.no_grad():
            model.generate(x, max_new_tokens=8, min_new_tokens=8, **kwargs)
            start = time.perf_counter()
            out = model.generate(x, max_new_tokens=128, min_new_tokens=128, **kwargs)
            seconds = time.perf_counter() - start
        new = (out.shape[1] - 16) * batch
        print(json.dumps({"bench": "generate", "peer": "transformers", "batch": batch,
                          "new_tokens": new, "seconds": seconds, "tokens_per_s": new / seconds}))


def positions():
    model = small()
    with torch.no_grad():
        for start in (64, 128, 256, 512, 1000):
            out = model(tokens(1, start, 8192), use_cache=True)
            past = out.past_key_values
            begin = time.perf_counter()
            for i in range(16):
                out = model(torch.tensor([[i * 31 % 8192]]), past_key_values=past, use_cache=True)
                past = out.past_key_values
            per = (time.perf_counter() - begin) / 16
            print(json.dumps({"bench": "decode-position", "peer": "transformers", "position": start,
                              "ms_per_token": per * 1e3, "tokens_per_s": 1 / per}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("bench", nargs="?", default="all")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads()}))
    if args.bench in ("forward", "all"):
        forward()
    if args.bench in ("generate", "all"):
        generate()
    if args.bench in ("positions", "all"):
        positions()
