#!/usr/bin/env bash
# The GPU check, prepared: run once on a machine with a GPU (never in CI), from release builds
# made elsewhere and carried over.
#
#   cargo build --release -p lmforge-cli -p lmforge-benches --bin lmforge --bin decode-speed
#   PEAK_TFLOPS=67 benches/gpu.sh target/release [DEVICE] [OUT]   # DEVICE: wgpu (default), wgpu:N, cuda:N
#
# Prints the adapter, then the device engine's decoding tokens/s at batch 1, 8, 32 and 128 for
# gpt2-small's shape and the 1.7b preset (random weights, f32 and f16), the scheduler at concurrency 32
# (continuous and static), the time to first token of a 512-token prompt, and the training step
# of `lmforge device` on the same device (its MFU against PEAK_TFLOPS, the device's peak in
# f32, when given); writes
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
    # What lmforge opens for DEVICE: the adapter's name, driver and memory (one tiny step).
    timeout 60 "$bin/lmforge" device --device "$device" --batch 1 --seq-len 8 --steps 1 2>&1 |
        grep -E '^(adapter|Error)' || true
} | tee "$out/adapter.txt"

run() { # seconds, then the command; its JSON lines go to $json
    local limit=$1
    shift
    echo "== $*"
    timeout "$limit" "$@" 2>&1 | tee -a "$out/log.txt" | grep '^{' | tee -a "$json"
}

# f32, then f16 (wgpu needs an adapter with SHADER_F16, as NVIDIA's have; bf16 is flex's and
# CUDA's only): a dtype the adapter lacks fails on its own without stopping the rest.
for dtype in f32 f16; do
    run 90 "$bin/decode-speed" --preset gpt2-small --vocab 50257 --device "$device" \
        --dtype "$dtype" --batches 1,8,32,128 --tokens 64 --rounds 1
    run 100 "$bin/decode-speed" --preset 1.7b --device "$device" \
        --dtype "$dtype" --batches 1,8,32,128 --tokens 32 --rounds 1
done
run 40 "$bin/decode-speed" --preset gpt2-small --vocab 50257 --device "$device" --ttft 512 --rounds 3
peak=()
[ -n "${PEAK_TFLOPS:-}" ] && peak=(--peak-tflops "$PEAK_TFLOPS")
run 60 "$bin/lmforge" device --device "$device" --batch 32 --seq-len 256 "${peak[@]}" --json "$out/device.json"
[ -f "$out/device.json" ] && python3 -c '
import json, sys
report = json.load(open(sys.argv[1]))
report["bench"] = "train-step"
report["model"] = "tiny"
print(json.dumps(report))' "$out/device.json" >> "$json"

{
    echo "| model | weights | bench | batch / scheduler | tokens/s (ttft: s) |"
    echo "|---|---|---|---|---|"
    grep '"bench"' "$json" | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    what = m.get("batch", m.get("scheduler", ""))
    rate = m.get("tokens_per_s", m.get("tokens_per_second", m.get("seconds", "")))
    if isinstance(rate, float):
        rate = f"{rate:.3f}" if m["bench"] == "ttft" else f"{rate:.1f}"
    cells = [m.get("model", ""), m.get("weights", ""), m["bench"], what, rate]
    print("| " + " | ".join(str(c) for c in cells) + " |")
'
} | tee "$out/gpu.md"
