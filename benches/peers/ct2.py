"""CTranslate2's CPU decoding on the same weights as lmforge's CPU engine: the peer of
`decode-speed` (benches/src/bin/decode_speed.rs).

    target/release/decode-speed --preset gpt2-small --vocab 50257 --save target/peers/gpt2-shape
    target/peers/ct2venv/bin/python benches/peers/ct2.py target/peers/gpt2-shape
    target/release/decode-speed --preset gpt2-small --vocab 50257 --batches 1,8

The checkpoint (ours: safetensors with burn's parameter names, `Linear` weights `[in, out]`)
is converted to a CTranslate2 model in memory from numpy arrays, as CTranslate2's own GPT-2
converter lays it out (no torch needed). Greedy decoding of the batch-8 prompts in float32 must
give the tokens `greedy.json` holds (lmforge's f32 engine's); then the same prompts as
decode-speed's (16 tokens, `--tokens` new ones, no end token) are timed at each batch, float32
and int8, best of `--rounds`. Prints one JSON object per measurement.

Setup (not in setup.sh's venv: CTranslate2 needs no torch):
    python3 -m venv target/peers/ct2venv
    target/peers/ct2venv/bin/pip install ctranslate2==4.8.5 numpy==2.4.6 safetensors==0.8.0
"""

import argparse
import json
import os
import tempfile
import time

import ctranslate2
import numpy as np
from ctranslate2.converters.converter import Converter
from ctranslate2.specs import common_spec, transformer_spec
from safetensors.numpy import load_file


class LmforgeGpt(Converter):
    def __init__(self, checkpoint):
        self.checkpoint = checkpoint

    def _load(self):
        with open(os.path.join(self.checkpoint, "lmforge.json")) as f:
            meta = json.load(f)
        config = meta["config"]
        assert meta["architecture"] == "gpt" and "quantization" not in meta
        assert config.get("positions", "learned") == "learned", "GPT-2's layout only"
        w = load_file(os.path.join(self.checkpoint, "model.safetensors"))
        spec = transformer_spec.TransformerDecoderModelSpec.from_config(
            config["n_layer"],
            config["n_head"],
            pre_norm=True,
            activation=common_spec.Activation.GELUTanh,
        )
        d = spec.decoder
        d.scale_embeddings = False
        d.embeddings.weight = w["wte.weight"]
        d.position_encodings.encodings = w["wpe.weight"]
        d.projection.weight = d.embeddings.weight
        norm(d.layer_norm, w, "ln_f")
        for i, layer in enumerate(d.layer):
            p = f"blocks.{i}"
            norm(layer.self_attention.layer_norm, w, f"{p}.ln_1")
            linear(layer.self_attention.linear[0], w, f"{p}.attn.qkv")
            linear(layer.self_attention.linear[1], w, f"{p}.attn.proj")
            norm(layer.ffn.layer_norm, w, f"{p}.ln_2")
            linear(layer.ffn.linear_0, w, f"{p}.mlp.up")
            linear(layer.ffn.linear_1, w, f"{p}.mlp.down")
        spec.register_vocabulary([f"t{i}" for i in range(config["vocab_size"])])
        spec.config.bos_token = spec.config.eos_token = spec.config.unk_token = "t0"
        return spec


def norm(spec, w, name):
    spec.gamma = w[f"{name}.weight"]
    spec.beta = w[f"{name}.bias"]


def linear(spec, w, name):
    spec.weight = np.ascontiguousarray(w[f"{name}.weight"].T)
    spec.bias = w[f"{name}.bias"]


def prompts(batch, vocab):
    # decode-speed's prompts.
    return [
        [f"t{(b * 7919 + i * 131 + 1) % vocab}" for i in range(16)] for b in range(batch)
    ]


def generate(generator, batch, tokens):
    out = generator.generate_batch(
        batch,
        max_length=tokens,
        sampling_topk=1,
        beam_size=1,
        include_prompt_in_result=False,
        end_token=[],
    )
    return [[int(t[1:]) for t in r.sequences[0]] for r in out]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    with open(os.path.join(args.checkpoint, "lmforge.json")) as f:
        vocab = json.load(f)["config"]["vocab_size"]
    with open(os.path.join(args.checkpoint, "greedy.json")) as f:
        expected = json.load(f)["greedy"]
    with tempfile.TemporaryDirectory() as out:
        LmforgeGpt(args.checkpoint).convert(out, force=True)
        for compute_type in ["float32", "int8"]:
            generator = ctranslate2.Generator(
                out, device="cpu", compute_type=compute_type, intra_threads=args.threads
            )
            got = generate(generator, prompts(8, vocab), len(expected[0]))
            same = sum(g == e for g, e in zip(got, expected))
            print(json.dumps({
                "bench": "greedy-check", "peer": "ctranslate2", "compute_type": compute_type,
                "sequences_identical_to_lmforge_f32": same, "of": len(expected),
            }))
            if compute_type == "float32":
                assert same == len(expected), "float32 greedy tokens differ from lmforge's"
            for batch in map(int, args.batches.split(",")):
                inputs = prompts(batch, vocab)
                generate(generator, inputs, 8)
                best = 0.0
                for _ in range(args.rounds):
                    start = time.perf_counter()
                    result = generate(generator, inputs, args.tokens)
                    seconds = time.perf_counter() - start
                    best = max(best, sum(map(len, result)) / seconds)
                print(json.dumps({
                    "bench": "generate", "peer": "ctranslate2 " + ctranslate2.__version__,
                    "compute_type": compute_type, "batch": batch, "prompt": 16,
                    "new_tokens": args.tokens, "threads": args.threads, "tokens_per_s": best,
                }))


if __name__ == "__main__":
    main()
