"""PyTorch eager on the shapes of `train-speed` (benches/src/bin/train_speed.rs), and on the
pipeline's own training run.

    benches/peers/setup.sh
    target/peers/venv/bin/python benches/peers/train.py [--threads 2] [--steps 5]
    target/peers/venv/bin/python benches/peers/train.py --data runs/default --save DIR

With `--data RUN` (a `cargo xtask pipeline` output folder) it trains the same model on the same
samples as the pipeline's train stage: Megatron's own GPTDataset (megatron-core) draws them
from RUN/data with the pipeline's seed, sequence length and split, which is what lmforge-dataset
reproduces sample for sample; the optimizer, warmup and cosine schedule, clipping and iteration
count are the pipeline config's `[train]`. It then writes a GPT-2 folder (config.json,
model.safetensors, the run's tokenizer.json) that `lmforge model import` reads, so that
`lmforge eval` scores both models on the same validation samples with the same code.

The `tiny` GPT of lmforge-model written as nanoGPT writes it: 4 pre-norm blocks of width 128,
4 heads, fused QKV, GELU MLP (tanh approximation, as GPT-2), learned positions, head tied to the
embedding, 32,000 tokens. Micro batch 8 × 256, AdamW (torch's default foreach implementation),
clip_grad_norm_(1.0), fp32. Mean of the timed steps after two warm-up steps; one JSON line.
"""
import argparse
import json
import math
import os
import shutil
import sys
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
        # GPT-2's and lmforge's scaled initialisation of the projections into the residual.
        for block in self.blocks:
            for p in (block.proj.weight, block.down.weight):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * layers))
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, idx, targets):
        pos = torch.arange(idx.shape[1])
        x = self.wte(idx) + self.wpe(pos)
        for block in self.blocks:
            x = block(x)
        logits = self.ln_f(x) @ self.wte.weight.t()
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


def gpt2_folder(model, args, tokenizer_json, out):
    """`model` as a Hugging Face GPT-2 folder (Conv1D weights are `[in, out]`)."""
    from safetensors.torch import save_file
    os.makedirs(out, exist_ok=True)
    t = {"transformer.wte.weight": model.wte.weight, "transformer.wpe.weight": model.wpe.weight,
         "transformer.ln_f.weight": model.ln_f.weight, "transformer.ln_f.bias": model.ln_f.bias}
    for i, b in enumerate(model.blocks):
        h = f"transformer.h.{i}"
        for name, norm in (("ln_1", b.ln_1), ("ln_2", b.ln_2)):
            t[f"{h}.{name}.weight"], t[f"{h}.{name}.bias"] = norm.weight, norm.bias
        for name, linear in (("attn.c_attn", b.qkv), ("attn.c_proj", b.proj),
                             ("mlp.c_fc", b.up), ("mlp.c_proj", b.down)):
            t[f"{h}.{name}.weight"] = linear.weight.t()
            t[f"{h}.{name}.bias"] = linear.bias
    save_file({k: v.detach().contiguous() for k, v in t.items()},
              os.path.join(out, "model.safetensors"))
    config = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
              "vocab_size": args.vocab, "n_positions": model.wpe.weight.shape[0],
              "n_embd": args.width, "n_layer": args.layers, "n_head": args.heads,
              "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
              "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
              "tie_word_embeddings": True}
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    shutil.copy(tokenizer_json, os.path.join(out, "tokenizer.json"))


def pipeline_run(args):
    """The pipeline's train stage, in PyTorch: see the module's documentation."""
    import tempfile
    import tomllib

    import numpy
    from megatron.core.datasets.blended_megatron_dataset_builder import \
        BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig

    with open(os.path.join(args.data, "..", "..", "datasets", "default", "pipeline.toml")
              if args.config is None else args.config, "rb") as f:
        config = tomllib.load(f)
    train, seed = config["train"], config["seed"]
    tokenizer_json = os.path.join(args.data, "tokenizer", "tokenizer.json")
    with open(tokenizer_json) as f:
        tok = json.load(f)
    vocab = len(tok["model"]["vocab"]) + sum(
        1 for t in tok["added_tokens"] if t["content"] not in tok["model"]["vocab"])
    eod = next(t["id"] for t in tok["added_tokens"] if t["content"] == "<|endoftext|>")
    args.vocab, args.layers, args.width, args.heads = (
        vocab, train["num_layers"], train["hidden_size"], train["num_attention_heads"])
    seq, micro, iters = train["seq_length"], train["micro_batch_size"], train["train_iters"]
    assert train["global_batch_size"] == micro, "gradient accumulation is not reproduced here"

    class Tokenizer:
        vocab_size = vocab
        unique_identifiers = {"class": "Tokenizer", "vocab_size": vocab}

    Tokenizer.eod = eod
    cache = tempfile.mkdtemp()
    dataset_config = GPTDatasetConfig(
        random_seed=seed, sequence_length=seq, split=train["split"], path_to_cache=cache,
        blend=([os.path.join(args.data, "data", "corpus_text_document")], None),
        tokenizer=Tokenizer(), reset_position_ids=False, reset_attention_mask=False,
        eod_mask_loss=False)
    train_set = BlendedMegatronDatasetBuilder(
        GPTDataset, [iters * micro, None, None], lambda: True, dataset_config).build()[0]
    shutil.rmtree(cache)

    torch.set_num_threads(args.threads)
    torch.manual_seed(seed)
    model = Gpt(vocab, positions=seq, d=args.width, layers=args.layers, heads=args.heads)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    max_lr, min_lr, warmup = train["lr"], train["min_lr"], train["lr_warmup_iters"]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": train["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=max_lr, betas=(0.9, train["adam_beta2"]), eps=1e-8)

    def lr_at(step):  # Megatron's get_lr, step counted from 1, as lmforge_train::LrSchedule
        if warmup > 0 and step <= warmup:
            return max_lr * step / warmup
        ratio = (step - warmup) / (iters - warmup)
        return min_lr + 0.5 * (math.cos(math.pi * ratio) + 1.0) * (max_lr - min_lr)

    started = time.perf_counter()
    losses = []
    for it in range(iters):
        rows = [train_set[it * micro + r] for r in range(micro)]
        tokens = torch.stack([torch.as_tensor(numpy.asarray(r["tokens"])) for r in rows]).long()
        labels = torch.stack([torch.as_tensor(numpy.asarray(r["labels"])) for r in rows]).long()
        for group in opt.param_groups:
            group["lr"] = lr_at(it + 1)
        loss = model(tokens, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train["clip_grad"])
        opt.step()
        losses.append(loss.item())
        if (it + 1) % train["log_interval"] == 0:
            print(f"iteration {it + 1}/{iters}: loss {losses[-1]:.4f}", file=sys.stderr)
    seconds = time.perf_counter() - started
    gpt2_folder(model, args, tokenizer_json, args.save)
    print(json.dumps({"bench": "train-pipeline", "peer": "torch-eager", "torch": torch.__version__,
                      "threads": args.threads, "iterations": iters, "train_seconds": seconds,
                      "tokens_per_s": iters * micro * seq / seconds, "final_loss": losses[-1],
                      "saved": args.save}))


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
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the model (inductor's C++ code for the CPU)")
    parser.add_argument("--data", help="a pipeline run folder: train on its data")
    parser.add_argument("--config", help="its pipeline.toml (datasets/default's by default)")
    parser.add_argument("--save", help="with --data: the GPT-2 folder to write")
    args = parser.parse_args()
    if args.data:
        return pipeline_run(args)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    batch, seq, vocab = args.batch, args.seq, args.vocab
    model = Gpt(vocab, positions=max(seq, 256), d=args.width, layers=args.layers,
                heads=args.heads)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                             {"params": no_decay, "weight_decay": 0.0}], lr=1e-4)
    step_model = torch.compile(model) if args.compile else model
    n = batch * seq
    idx = torch.tensor([(i * 104729) % vocab for i in range(n)]).view(batch, seq)
    tgt = torch.tensor([((i + 1) * 104729) % vocab for i in range(n)]).view(batch, seq)
    times = []
    for i in range(args.steps + 2):
        start = time.perf_counter()
        loss = step_model(idx, tgt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss.item()
        if i >= 2:
            times.append(time.perf_counter() - start)
    mean = sum(times) / len(times)
    peer = "torch-compile" if args.compile else "torch-eager"
    print(json.dumps({"bench": "train", "peer": peer, "threads": args.threads,
                      "torch": torch.__version__, "batch": batch, "seq": seq, "vocab": vocab,
                      "layers": args.layers, "width": args.width, "heads": args.heads,
                      "seconds_per_step": mean, "tokens_per_s": n / mean,
                      "loss": loss.item()}))


if __name__ == "__main__":
    main()
