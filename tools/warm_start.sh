#!/usr/bin/env bash
# Warm start for the RL stage on 2 CPU cores: a smoke-sized model that writes passing programs.
#
#   tools/warm_start.sh                 # docs -> train (45 min budget) -> eval, run in runs/warm-start
#   tools/warm_start.sh runs/ws2        # another run directory
#   tools/warm_start.sh --dry-run       # print the commands only
#
# Steps (each echoed with a leading '+', each a command you can rerun by hand):
#   1. every distinct train-split task document of seed 0 (prompt + reference, ~34k, ~12 MB):
#      `koda tasks export --train 3000 --train-up-to` takes each family's distinct instances up
#      to 3000; the held-out split (3 per family) is fixed by the seed and excluded by behaviour.
#      Cached in cache/warm_start_docs.jsonl (a few minutes once).
#   2. `koda train --config warm_start`: tokenizer (vocab 1024) and shards on the documents,
#      from scratch, 1 rank, stops with a checkpoint at train.time_budget_s (2,700 s).
#   3. `koda eval` on koda:heldout: greedy pass@1, then pass@1/pass@8 at temperature 0.8; and
#      greedy pass@1 on the first 8 train tasks per family (all seen in training: memorisation).
# Figures and the trials behind the recipe: docs/warm_start.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
RUN=runs/warm-start
DRY=0
for arg in "$@"; do
    case "$arg" in
        --dry-run) DRY=1 ;;
        -*) echo "tools/warm_start.sh: unknown option $arg" >&2; exit 2 ;;
        *) RUN=$arg ;;
    esac
done
DOCS=cache/warm_start_docs.jsonl

run() {
    echo "+ $*"
    [ "$DRY" = 1 ] || "$@"
}

if [ ! -f "$DOCS" ] || [ "$DRY" = 1 ]; then
    mkdir -p cache
    run "$PY" -m koda tasks export --seed 0 --heldout 3 --train 3000 --train-up-to --split train --documents \
        --out "$DOCS.tmp"
    run mv "$DOCS.tmp" "$DOCS"
fi
run "$PY" -m koda train --config warm_start --run-dir "$RUN"
EVAL=("$PY" -m koda eval --model "$RUN" --task-seed 0 --heldout 3 --batch 72 --no-measure --no-wandb)
run "${EVAL[@]}" --tasks koda:heldout --temperature 0 --out "$RUN/eval_heldout_greedy.json"
run "${EVAL[@]}" --tasks koda:heldout --n 8 --temperature 0.8 --seed 0 --k 1,8 --out "$RUN/eval_heldout_t0.8.json"
run "${EVAL[@]}" --tasks koda:train --train 8 --temperature 0 --out "$RUN/eval_train_greedy.json"
