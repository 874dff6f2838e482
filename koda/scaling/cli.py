"""``koda scaling``: fit loss = a·C^(-b) (with breakpoints) to runs or a table and extrapolate.

The command parses arguments, prints and writes files; ``koda.scaling.points`` reads the
inputs, ``koda.scaling.fit`` fits, ``koda.scaling.plot`` draws.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from koda.errors import KodaError
from koda.scaling import fit as fitting
from koda.scaling.points import Points, read_inputs

EXAMPLES = """examples:
  koda scaling runs/a runs/b runs/c --predict 1e18,1e19 --plot scaling.png
  koda scaling points.csv --breakpoints 1 --out fit.json      # CSV header: compute,loss

Each run directory contributes one point per validation (step > 0); compute is
step x train_batch_size x seq_len x FLOPs per token. User manual: docs/scaling.md"""


def _breakpoints(text: str) -> int | None:
    if text == "auto":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer or 'auto', got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer or 'auto', got {text!r}")
    return value


def _predict(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated compute values, got {text!r}") from None
    if not values or any(not np.isfinite(v) or v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"compute values must be positive, got {text!r}")
    return values


def run_fit(inputs: list[Points], breakpoints: int | None, max_breakpoints: int, min_segment_points: int):
    """The fit of all inputs' points together; with breakpoints None, K chosen by BIC."""
    compute = np.concatenate([np.asarray(p.compute) for p in inputs])
    loss = np.concatenate([np.asarray(p.loss) for p in inputs])
    if breakpoints is None:
        return fitting.select(compute, loss, max_breakpoints, min_segment_points)
    result = fitting.fit(compute, loss, breakpoints, min_segment_points)
    return result, {result.k: result.bic}


def to_json(result: fitting.PowerLawFit, bics: dict[int, float], inputs: list[Points],
            predict: tuple[float, ...], chosen: str) -> dict:
    return {
        "model": "log10 L = continuous piecewise linear in log10 C; L = a*C^(-b) per segment",
        "breakpoints_chosen_by": chosen, "k": result.k, "n_points": result.n_points, "rss_log10": result.rss,
        "bic": result.bic, "bic_by_k": {str(k): v for k, v in bics.items()},
        "breakpoints_compute": list(result.breakpoints), "segments": result.segments(),
        "predictions": [{"compute": c, "loss": float(result.predict(c))} for c in predict],
        "inputs": [{"source": p.source, "flops_per_token": p.flops_per_token, "tokens_per_step": p.tokens_per_step,
                    "points": [{"compute": c, "loss": v, **({"step": s} if p.steps else {})}
                               for c, v, s in zip(p.compute, p.loss, p.steps or [None] * len(p.compute),
                                                  strict=True)]}
                   for p in inputs],
    }


def _print(result: fitting.PowerLawFit, bics: dict[int, float], inputs: list[Points],
           predict: tuple[float, ...]) -> None:
    for p in inputs:
        extra = (f", {p.flops_per_token:.4g} FLOPs/token, {p.tokens_per_step} tokens/step"
                 if p.flops_per_token else "")
        print(f"{p.source}: {len(p.compute)} points, compute {min(p.compute):.3g} .. {max(p.compute):.3g}{extra}")
    if len(bics) > 1:
        print("BIC by breakpoints: " + ", ".join(f"K={k} {v:.2f}" for k, v in bics.items()) + f" -> K={result.k}")
    print(f"fit over {result.n_points} points, {result.k} breakpoint(s), RSS (log10 loss) {result.rss:.3g}")
    print(f"{'segment':>7} {'from C':>10} {'to C':>10} {'a':>11} {'b':>8}")
    for j, seg in enumerate(result.segments()):
        lo = "-" if seg["from_compute"] is None else f"{seg['from_compute']:.3g}"
        hi = "-" if seg["to_compute"] is None else f"{seg['to_compute']:.3g}"
        print(f"{j:>7} {lo:>10} {hi:>10} {seg['a']:>11.4g} {seg['b']:>8.4f}")
    if predict:
        print(f"{'compute':>10} {'predicted loss':>15}")
        for c in predict:
            print(f"{c:>10.3g} {float(result.predict(c)):>15.4f}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="koda scaling", epilog=EXAMPLES,
                                     description="Fit loss = a*C^(-b) with breakpoints to runs or a table.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", metavar="RUN_DIR|TABLE",
                        help="run directories, or .csv/.jsonl files of compute,loss points")
    parser.add_argument("--breakpoints", type=_breakpoints, default=None, metavar="K|auto",
                        help="number of breakpoints, or auto: the K of least BIC (default auto)")
    parser.add_argument("--max-breakpoints", type=int, default=3, help="largest K tried by auto (default 3)")
    parser.add_argument("--min-segment-points", type=int, default=2,
                        help="points each segment must hold (default 2)")
    parser.add_argument("--predict", type=_predict, default=(), metavar="C1,C2",
                        help="compute values (FLOPs) to predict the loss at")
    parser.add_argument("--out", metavar="FILE.json", help="write the fit and its inputs as JSON")
    parser.add_argument("--plot", metavar="FILE.png", help="draw points, fit, breakpoints and extrapolation")
    args = parser.parse_args(argv)
    if args.max_breakpoints < 0 or args.min_segment_points < 1:
        raise KodaError("--max-breakpoints must be >= 0 and --min-segment-points >= 1")
    inputs = read_inputs(args.inputs)
    result, bics = run_fit(inputs, args.breakpoints, args.max_breakpoints, args.min_segment_points)
    _print(result, bics, inputs, args.predict)
    if args.out:
        chosen = "bic" if args.breakpoints is None else "user"
        Path(args.out).write_text(json.dumps(to_json(result, bics, inputs, args.predict, chosen), indent=1) + "\n")
        print(f"wrote {args.out}")
    if args.plot:
        from koda.scaling.plot import build_figure, save_figure  # matplotlib only when a plot is asked for

        print(f"wrote {save_figure(build_figure(result, inputs, args.predict), args.plot)}")
    return 0
