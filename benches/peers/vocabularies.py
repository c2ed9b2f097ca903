"""OpenAI's vocabularies as tiktoken builds them, from the rank files `cargo xtask fixtures`
fetches (tiktoken's own constructors would download them). Patterns as tiktoken 0.14's
tiktoken_ext/openai_public.py spells them, except GPT-2's: the original pattern, the one
REFERENCES.md and Hugging Face use (tiktoken's r50k spelling gives the same pieces)."""

import base64
import gzip
import os

import tiktoken

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.environ.get("LMFORGE_FIXTURES", os.path.join(ROOT, "target", "fixtures"))

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
CL100K_PATTERN = r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
O200K_PATTERN = "|".join([
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""",
    r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
])
FIM = {"<|fim_prefix|>": 100258, "<|fim_middle|>": 100259, "<|fim_suffix|>": 100260}
SPECS = {
    "gpt2": ("gpt2.tiktoken", GPT2_PATTERN, {"<|endoftext|>": 50256}),
    "cl100k_base": ("cl100k_base.tiktoken.gz", CL100K_PATTERN,
                    {"<|endoftext|>": 100257, **FIM, "<|endofprompt|>": 100276}),
    "o200k_base": ("o200k_base.tiktoken.gz", O200K_PATTERN,
                   {"<|endoftext|>": 199999, "<|endofprompt|>": 200018}),
}


def ranks(name):
    path = os.path.join(FIXTURES, name)
    with (gzip.open if name.endswith(".gz") else open)(path, "rb") as f:
        return {base64.b64decode(tok): int(rank)
                for tok, rank in (line.split() for line in f.read().splitlines() if line)}


def encoding(name):
    file, pattern, specials = SPECS[name]
    return tiktoken.Encoding(name, pat_str=pattern, mergeable_ranks=ranks(file),
                             special_tokens=specials)
