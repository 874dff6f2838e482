#!/usr/bin/env python
"""Direct feedback alignment against backprop: the same run, the same initial weights.

Trains the given config twice for --steps steps on 2 ranks (ZeRO-3 + AutoEP), once with
``train.feedback=backprop`` and once with ``train.feedback=dfa``, from the same seed (so the
same initial weights and batches), and prints side by side per logged step the training CE,
the validation loss, DFA's mean gradient alignment (cosine with the backprop gradient of the
same batch) and each slot's; then the DFA/backprop ratios of the final losses, of the loss
drop from the shared step-0 validation loss, and of the step time.

    python tools/compare_dfa.py --config smoke --steps 100 --align-every 10
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from koda.report.variants import VariantFailed, run_variant


def run(config: str, steps: int, feedback: str, root: Path, overrides: list[str]) -> dict[int, dict]:
    """One run's logged metrics, a {key: value} per step."""
    try:
        result = run_variant(config, root / feedback, [f"train.feedback={feedback}",
                             f"train.checkpoint_every={steps}", *overrides], steps=steps, capture=True)
    except VariantFailed as err:
        sys.exit(f"{feedback} run failed (exit {err.returncode}):\n{err.output[-8000:]}")
    return result.by_step()


def _fmt(value, spec: str = ".4f") -> str:
    return "-" if value is None else f"{value:{spec}}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="smoke")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--align-every", type=int, default=10)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--root", default="runs/dfa-compare")
    p.add_argument("--set", action="append", default=[], help="extra overrides for both runs")
    args = p.parse_args()
    extra = [*args.set, f"train.dfa_align_every={args.align_every}", f"train.eval_every={args.eval_every}"]
    dfa, bp = (run(args.config, args.steps, mode, Path(args.root), extra) for mode in ("dfa", "backprop"))

    slots = sorted({k for m in dfa.values() for k in m if k.startswith("dfa/") and k != "dfa/alignment"},
                   key=lambda k: -1 if "embedding" in k else int(k.split("/")[1][len("layer"):]))
    labels = [s.split("/")[1].replace("layer", "L").replace("embedding", "emb") for s in slots]
    print(f"{'step':>5} {'bp ce':>8} {'dfa ce':>8} {'bp val':>8} {'dfa val':>8} {'align':>7}  "
          + " ".join(f"{lab:>6}" for lab in labels))
    for step in sorted(set(bp) | set(dfa)):
        a, b = bp.get(step, {}), dfa.get(step, {})
        if not any(k in a or k in b for k in ("train/ce", "val/loss", "dfa/alignment")):
            continue
        print(f"{step:>5} {_fmt(a.get('train/ce')):>8} {_fmt(b.get('train/ce')):>8} {_fmt(a.get('val/loss')):>8} "
              f"{_fmt(b.get('val/loss')):>8} {_fmt(b.get('dfa/alignment'), '.3f'):>7}  "
              + " ".join(f"{_fmt(b.get(s), '.3f'):>6}" for s in slots))

    def last(run: dict, key: str) -> float:
        return next(run[s][key] for s in sorted(run, reverse=True) if key in run[s])

    start_bp, start_dfa = bp[0]["val/loss"], dfa[0]["val/loss"]
    print(f"step-0 validation loss: backprop {start_bp:.6f}, dfa {start_dfa:.6f} "
          f"({'same' if start_bp == start_dfa else 'DIFFERENT'} initial weights)")
    for key in ("train/ce", "val/loss"):
        print(f"final {key}: backprop {last(bp, key):.4f}, dfa {last(dfa, key):.4f}, "
              f"ratio dfa/bp {last(dfa, key) / last(bp, key):.3f}")
    drop_bp, drop_dfa = start_bp - last(bp, "val/loss"), start_dfa - last(dfa, "val/loss")
    print(f"validation loss drop from step 0: backprop {drop_bp:.4f}, dfa {drop_dfa:.4f}, "
          f"ratio dfa/bp {drop_dfa / drop_bp:.3f}" if drop_bp else "backprop's validation loss did not move")
    steps_bp = [m["perf/step_s"] for m in bp.values() if "perf/step_s" in m]
    steps_dfa = [m["perf/step_s"] for m in dfa.values() if "perf/step_s" in m]
    print(f"mean step time (s, DFA's includes its alignment passes): backprop {sum(steps_bp) / len(steps_bp):.3f}, "
          f"dfa {sum(steps_dfa) / len(steps_dfa):.3f}")


if __name__ == "__main__":
    main()
