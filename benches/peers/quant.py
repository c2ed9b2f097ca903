"""PyTorch's own CPU int8 against its fp32, on the shapes of `quant-speed`
(benches/src/bin/quant_speed.rs).

    benches/peers/setup.sh
    target/peers/venv/bin/python benches/peers/quant.py [--threads 2] [--preset tiny|gpt2-small]

The GPT of lmforge-model written as nanoGPT writes it (pre-norm blocks, fused QKV, GELU-tanh
MLP, learned positions, head tied to the embedding) with a KV cache; greedy decoding at batch 1,
an 8-token prompt then 128 new tokens, prefill included, best of three after a warm-up — what
`quant-speed` and `lmforge quantize` time. fp32 eager against
`torch.ao.quantization.quantize_dynamic` (int8 weights per output channel, activations
quantized per tensor on the fly, fbgemm kernels) on every `nn.Linear`, the head included.
Weights are random: speed does not depend on their values. One JSON line per measurement.
"""
import argparse
import json
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

    def forward(self, x, cache):
        b, s, d = x.shape
        q, k, v = self.qkv(self.ln_1(x)).split(d, dim=2)
        shape = (b, s, self.heads, d // self.heads)
        q, k, v = (t.view(shape).transpose(1, 2) for t in (q, k, v))
        if cache is not None:
            k = torch.cat([cache[0], k], dim=2)
            v = torch.cat([cache[1], v], dim=2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=cache is None)
        x = x + self.proj(y.transpose(1, 2).reshape(b, s, d))
        return x + self.down(F.gelu(self.up(self.ln_2(x)), approximate="tanh")), (k, v)


class Gpt(nn.Module):
    def __init__(self, vocab, positions, d, layers, heads):
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(positions, d)
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        for p in self.parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, std=0.02)
        self.head.weight = self.wte.weight

    def forward(self, idx, start, caches):
        pos = torch.arange(start, start + idx.shape[1])
        x = self.wte(idx) + self.wpe(pos)
        out = []
        for block, cache in zip(self.blocks, caches):
            x, kv = block(x, cache)
            out.append(kv)
        return self.head(self.ln_f(x[:, -1])), out


def decode(model, prompt, n):
    with torch.no_grad():
        logits, caches = model(prompt, 0, [None] * len(model.blocks))
        pos = prompt.shape[1]
        for _ in range(n):
            # As lmforge: log-softmax for the token's log-probability, then argmax.
            torch.log_softmax(logits, -1)
            token = logits.argmax(-1, keepdim=True)
            logits, caches = model(token, pos, caches)
            pos += 1


def rate(model, prompt, n):
    decode(model, prompt, 8)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        decode(model, prompt, n)
        best = min(best, time.perf_counter() - start)
    return n / best


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--preset", default="tiny", choices=["tiny", "gpt2-small"])
    parser.add_argument("--tokens", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shape = {"tiny": (32000, 256, 128, 4, 4), "gpt2-small": (50257, 1024, 768, 12, 12)}[args.preset]
    model = Gpt(*shape).eval()
    prompt = torch.tensor([[(i * 131) % shape[0] for i in range(8)]])
    fp32 = rate(model, prompt, args.tokens)
    int8 = torch.ao.quantization.quantize_dynamic(
        model, {nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig}, dtype=torch.qint8)
    q = rate(int8, prompt, args.tokens)
    for weights, tps in (("fp32", fp32), ("int8-dynamic", q)):
        print(json.dumps({"bench": "decode", "peer": "torch-eager", "preset": args.preset,
                          "weights": weights, "threads": args.threads, "tokens_per_s": tps,
                          "speedup": tps / fp32}))


if __name__ == "__main__":
    main()
