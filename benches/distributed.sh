#!/usr/bin/env bash
# Data-parallel training throughput on this machine (docs/benchmarks.md, "Training across
# processes"): the default pipeline's model and data, one global batch of 16 samples × 256
# tokens, as
#   1 rank  × 1 thread   (16 = 8 × 2 accumulated)
#   1 rank  × 2 threads  (the same, rayon over both cores)
#   2 ranks × 1 thread   (mpirun -n 2, 8 each)
#   2 ranks × 1 thread with --use-distributed-optimizer (ZeRO-1: reduce-scatter + all-gather)
#   2 ranks × 1 thread with --tensor-model-parallel-size 2 (one model cut in two, 16 each)
# and the cost of the all-reduce per MB (LMFORGE_COLLECTIVE_BENCH below).
#
#   bash benches/distributed.sh [ITERATIONS]
#
# Needs the `mpi` build (`cargo xtask test` makes it where Open MPI is installed) and the
# pipeline's data (`cargo xtask pipeline --until convert` writes target/pipeline/).
set -euo pipefail
cd "$(dirname "$0")/.."
iters="${1:-12}"
target="${CARGO_TARGET_DIR:-target}"
bin="$target/debug/lmforge"
run="${PIPELINE_OUT:-target/pipeline}"
[ -x "$bin" ] || { echo "build first: cargo build --workspace --all-targets --features lmforge-cli/mpi"; exit 1; }
[ -f "$run/tokenizer/tokenizer.json" ] || { echo "no pipeline data in $run: cargo xtask pipeline --until convert"; exit 1; }
data=$(ls "$run"/data/*_text_document.bin | head -1)
data="${data%.bin}"
out="$target/bench-distributed"
rm -rf "$out"
mkdir -p "$out"

flags=(train gpt --data-path "$data" --tokenizer "$run/tokenizer/tokenizer.json"
  --config tiny --seq-length 256 --micro-batch-size 8 --global-batch-size 16
  --train-iters "$iters" --lr 2e-3 --log-interval 1 --eval-interval 0 --eval-iters 1
  --split 969,30,1 --data-cache-path "$out/cache" --device flex)

tps() { python3 -c "import json,sys; print(round(json.load(open(sys.argv[1]))['tokens_per_second']))" "$1/train_report.json"; }

RAYON_NUM_THREADS=1 "$bin" "${flags[@]}" --save "$out/one-1" 2>"$out/one-1.log"
RAYON_NUM_THREADS=2 "$bin" "${flags[@]}" --save "$out/one-2" 2>"$out/one-2.log"
mpirun --allow-run-as-root --bind-to core -n 2 -x RAYON_NUM_THREADS=1 \
  "$bin" "${flags[@]}" --save "$out/two-1" 2>"$out/two-1.log"

mpirun --allow-run-as-root --bind-to core -n 2 -x RAYON_NUM_THREADS=1 \
  "$bin" "${flags[@]}" --use-distributed-optimizer --save "$out/zero-1" 2>"$out/zero-1.log"

mpirun --allow-run-as-root --bind-to core -n 2 -x RAYON_NUM_THREADS=1 \
  "$bin" "${flags[@]}" --tensor-model-parallel-size 2 --save "$out/tp-1" 2>"$out/tp-1.log"

a=$(tps "$out/one-1"); b=$(tps "$out/one-2"); c=$(tps "$out/two-1"); z=$(tps "$out/zero-1")
t=$(tps "$out/tp-1")
echo "tokens/s (iterations after the first, $iters iterations, global batch 16 x 256):"
echo "  1 rank  x 1 thread : $a"
echo "  1 rank  x 2 threads: $b"
echo "  2 ranks x 1 thread : $c   ($(python3 -c "print(f'{$c/$a:.2f}x 1x1, {$c/$b:.2f}x 1x2')"))"
echo "  2 ranks x 1 thread, distributed optimizer: $z"
echo "  2 ranks x 1 thread, tensor parallel 2:      $t"
for run in two-1 zero-1 tp-1; do
  echo "$run:"; grep -h "all-reduce\|memory per rank" "$out/$run.log" | head -3 || true
done
