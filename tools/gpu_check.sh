#!/usr/bin/env bash
# GPU check, one GPU, under ten minutes: does KODA train in bf16 with flash attention on CUDA, how
# fast against plain PyTorch on the same GPU, and at what MFU against the datasheet peak?
#
#   tools/gpu_check.sh                      # the GPU's dense bf16 datasheet peak from a small table
#   tools/gpu_check.sh --peak-tflops 989    # any other GPU: give its dense bf16 TFLOP/s
#   tools/gpu_check.sh --dry-run            # print the commands only (no GPU needed)
#
# Runs, in order (each a command you can rerun by hand; they are echoed with a leading '+'):
#   1. preflight: refuse, in one line and with a non-zero exit, a machine without CUDA, bf16 or
#      flash-attn; pick the peak (tools/gpu_check.py)
#   2. koda train, smoke preset, 1 rank, bf16 (ds_config "auto" on a bf16 GPU), model.attention
#      flash, 60 steps, logging.peak_tflops = the peak, so the logged MFU is against the datasheet
#   3. the same with the small preset, 100 steps (its own 16k tokenizer on 8 MB of the stdlib)
#   4. tools/bench_train.py --device cuda --ranks 1: plain PyTorch vs KODA ZeRO-3 + AutoEP on
#      this GPU, tokens/s and MFU against the same peak
#   5. a summary of the two training runs (median tokens/s and MFU, last CE)
# The training runs warm up over 5 steps (a copy of the preset's ds_config) so that a short run
# passes koda's schedule check. Outputs go under runs/gpu_check/<time>/ (--out to change).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
PEAK=""
OUT="runs/gpu_check/$(date +%Y%m%d-%H%M%S)"
CACHE=cache/gpu_check
DRY=0
while [ $# -gt 0 ]; do
    case "$1" in
        --peak-tflops) PEAK=${2:?--peak-tflops needs a number}; shift 2 ;;
        --out) OUT=${2:?--out needs a directory}; shift 2 ;;
        --dry-run) DRY=1; shift ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        *) echo "gpu_check: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done

run() {
    printf '+'; printf ' %q' "$@"; printf '\n'
    if [ "$DRY" = 0 ]; then "$@"; fi
}

if [ "$DRY" = 1 ]; then
    PEAK=${PEAK:-989}
else
    PEAK=$("$PY" tools/gpu_check.py preflight ${PEAK:+--peak-tflops "$PEAK"})
fi

COMMON=(--world-size 1 --set model.attention=flash --set "logging.peak_tflops=$PEAK"
        --set logging.wandb_mode=disabled --set logging.progress_bar=false
        --set train.eval_every=100000 --set train.checkpoint_every=100000)

run "$PY" tools/gpu_check.py ds-config zero3_ep_smoke.json "$OUT/smoke.ds.json" --warmup 5
run "$PY" -m koda train --config smoke --steps 60 --run-dir "$OUT/smoke" "${COMMON[@]}" \
    --set "ds_config=$OUT/smoke.ds.json" --set train.log_every=10

run "$PY" tools/gpu_check.py ds-config zero3_ep_small.json "$OUT/small.ds.json" --warmup 5
run "$PY" -m koda train --config small --steps 100 --run-dir "$OUT/small" "${COMMON[@]}" \
    --set "ds_config=$OUT/small.ds.json" --set train.log_every=10 \
    --set "data.tokenizer=$CACHE/tokenizer-stdlib-16384-8mb.model" --set data.tokenizer_corpus_mb=8 \
    --set "data.shards_dir=$CACHE/shards-stdlib-16384-8mb" --set data.max_corpus_mb=24

run "$PY" tools/bench_train.py --device cuda --ranks 1 --model small --seq-len 1024 --micro-batch 8 \
    --attention flash --peak-tflops "$PEAK" --steps 20 --warmup 3

run "$PY" tools/gpu_check.py summary "$OUT/smoke" "$OUT/small"
