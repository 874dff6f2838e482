#!/usr/bin/env python
"""The same 2-rank ZeRO-3 + AutoEP run with and without the orthogonality penalty.

Each run trains the config for --steps steps with ``isometry.ortho_lambda`` set to one of
--lambdas (the first is the baseline, normally 0) and the iso/* spectrum statistics logged
at the start and the end; the table puts the runs side by side: validation loss (and its
ratio to the baseline's) and, per weight kind, the singular values at the end.

    python tools/compare_isometry.py --config smoke --steps 40 --lambdas 0 0.001
"""

from __future__ import annotations

import argparse
from pathlib import Path

from koda.report.runs import Run
from koda.report.variants import run_variant

STATS = ("sv_min", "sv_max", "cond", "mp_inside", "mp_above", "gram_dev")


def run(config: str, steps: int, lam: float, patterns: str, root: Path, overrides: list[str]) -> Run:
    return run_variant(config, root / f"ortho-{lam:g}", [f"isometry.ortho_lambda={lam}",
                       f"isometry.ortho_patterns={patterns}", f"isometry.spectrum_every={steps}", *overrides],
                       steps=steps)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="smoke")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--lambdas", type=float, nargs="+", default=[0.0, 1e-3])
    p.add_argument("--patterns", default="[q_proj, o_proj, experts.w1]", help="isometry.ortho_patterns (YAML)")
    p.add_argument("--kinds", nargs="+", default=["q_proj", "o_proj", "experts.w1", "k_proj"])
    p.add_argument("--root", default="runs/isometry")
    p.add_argument("--set", action="append", default=[], help="extra overrides for every run")
    args = p.parse_args()
    runs = {lam: run(args.config, args.steps, lam, args.patterns, Path(args.root), args.set) for lam in args.lambdas}

    def last(run: Run, key: str) -> float:
        return run.scalars[key].values[-1] if run.has(key) else float("nan")

    def first(run: Run, key: str) -> float:
        return run.scalars[key].values[0] if run.has(key) else float("nan")

    base = runs[args.lambdas[0]]
    print(f"{args.config}, {args.steps} steps, penalty on {args.patterns}")
    print(f"{'':<26}" + "".join(f"{'lambda ' + format(lam, 'g'):>16}" for lam in args.lambdas))
    rows = [("val loss", lambda r: last(r, "val/loss")),
            ("val loss / baseline", lambda r: last(r, "val/loss") / last(base, "val/loss")),
            ("train ortho (end)", lambda r: last(r, "train/ortho"))]
    for kind in args.kinds:
        rows.append((f"{kind} gram_dev (start)", lambda r, k=kind: first(r, f"iso/{k}/gram_dev")))
        rows += [(f"{kind} {stat}", lambda r, k=kind, s=stat: last(r, f"iso/{k}/{s}")) for stat in STATS]
    for label, value in rows:
        print(f"{label:<26}" + "".join(f"{value(runs[lam]):>16.4g}" for lam in args.lambdas))


if __name__ == "__main__":
    main()
