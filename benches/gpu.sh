#!/usr/bin/env bash
# The GPU check, prepared: run once on a machine with a GPU (never in CI), from release builds
# made elsewhere and carried over.
#
#   cargo build --release -p lmforge-cli -p lmforge-benches --bin lmforge --bin decode-speed
#   benches/gpu.sh target/release [DEVICE] [OUT]        # DEVICE: wgpu (default), wgpu:N, cuda:N
#
# Prints the adapter, then the device engine's decoding tokens/s at batch 1, 8, 32 and 128 for
# gpt2-small's shape and the 1.7b preset (random weights, f32), the scheduler at concurrency 32
# (continuous and static), and the training step of `lmforge device` on the same device; writes
# OUT/gpu.json (one JSON object per line) and OUT/gpu.md. Each part has its own time limit so
# that the whole run stays under 8 minutes.
set -uo pipefail

bin=${1:?usage: benches/gpu.sh BIN_DIR [DEVICE] [OUT]}
device=${2:-wgpu}
out=${3:-gpu-report}
mkdir -p "$out"
json="$out/gpu.json"
: > "$json"

echo "== adapter"
{
    vulkaninfo --summary 2>/dev/null ||
        { echo "vulkaninfo not found; Vulkan ICDs:"; ls /usr/share/vulkan/icd.d /etc/vulkan/icd.d 2>/dev/null; }
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
} | tee "$out/adapter.txt"

run() { # seconds, then the command; its JSON lines go to $json
    local limit=$1
    shift
    echo "== $*"
    timeout "$limit" "$@" 2>&1 | tee -a "$out/log.txt" | grep '^{' | tee -a "$json"
}

run 150 "$bin/decode-speed" --preset gpt2-small --vocab 50257 --device "$device" \
    --batches 1,8,32,128 --tokens 64 --rounds 1
run 150 "$bin/decode-speed" --preset 1.7b --device "$device" \
    --batches 1,8,32,128 --tokens 32 --rounds 1
run 120 "$bin/lmforge" device --device "$device" --json "$out/device.json"
[ -f "$out/device.json" ] && cat "$out/device.json" >> "$json"

{
    echo "| model | bench | batch / scheduler | tokens/s |"
    echo "|---|---|---|---|"
    grep '"bench"' "$json" | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    what = m.get("batch", m.get("scheduler", ""))
    rate = m.get("tokens_per_s", m.get("tokens_per_second", ""))
    print(f"| {m.get(\"model\", \"\")} | {m[\"bench\"]} | {what} | {rate} |")
' 2>/dev/null
} | tee "$out/gpu.md"
