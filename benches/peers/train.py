"""PyTorch eager on the shapes of `train-speed` (benches/src/bin/train_speed.rs).

    benches/peers/setup.sh
    target/peers/venv/bin/python benches/peers/train.py [--threads 2] [--steps 5]

The `tiny` GPT of lmforge-model written as nanoGPT writes it: 4 pre-norm blocks of width 128,
4 heads, fused QKV, GELU MLP (tanh approximation, as GPT-2), learned positions, head tied to the
embedding, 32,000 tokens. Micro batch 8 × 256, AdamW (torch's default foreach implementation),
clip_grad_norm_(1.0), fp32. Mean of the timed steps after two warm-up steps; one JSON line.
"""
import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.ln_1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln_2 = nn.LayerNorm(d)
        self.up = nn.Linear(d, 4 * d)
        self.down = nn.Linear(4 * d, d)

    def forward(self, x):
        b, s, d = x.shape
        q, k, v = self.qkv(self.ln_1(x)).split(d, dim=2)
        shape = (b, s, self.heads, d // self.heads)
        q, k, v = (t.view(shape).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, s, d))
        return x + self.down(F.gelu(self.up(self.ln_2(x)), approximate="tanh"))


class Gpt(nn.Module):
    def __init__(self, vocab=32000, positions=256, d=128, layers=4, heads=4):
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(positions, d)
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        for p in self.parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, idx, targets):
        pos = torch.arange(idx.shape[1])
        x = self.wte(idx) + self.wpe(pos)
        for block in self.blocks:
            x = block(x)
        logits = self.ln_f(x) @ self.wte.weight.t()
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    # The shape, as target/debug/train-speed takes it (the `tiny` preset's by default).
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    batch, seq, vocab = args.batch, args.seq, args.vocab
    model = Gpt(vocab, positions=max(seq, 256), d=args.width, layers=args.layers,
                heads=args.heads)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                             {"params": no_decay, "weight_decay": 0.0}], lr=1e-4)
    n = batch * seq
    idx = torch.tensor([(i * 104729) % vocab for i in range(n)]).view(batch, seq)
    tgt = torch.tensor([((i + 1) * 104729) % vocab for i in range(n)]).view(batch, seq)
    times = []
    for i in range(args.steps + 2):
        start = time.perf_counter()
        loss = model(idx, tgt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss.item()
        if i >= 2:
            times.append(time.perf_counter() - start)
    mean = sum(times) / len(times)
    print(json.dumps({"bench": "train", "peer": "torch-eager", "threads": args.threads,
                      "torch": torch.__version__, "batch": batch, "seq": seq, "vocab": vocab,
                      "layers": args.layers, "width": args.width, "heads": args.heads,
                      "seconds_per_step": mean, "tokens_per_s": n / mean,
                      "loss": loss.item()}))


if __name__ == "__main__":
    main()
