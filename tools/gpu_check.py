#!/usr/bin/env python
"""Helpers of tools/gpu_check.sh: refuse a machine without CUDA, pick the datasheet peak, summarise.

    python tools/gpu_check.py preflight [--peak-tflops T]   # prints T (TFLOP/s) or exits 1, one line
    python tools/gpu_check.py ds-config zero3_ep_smoke.json OUT.json --warmup 5
    python tools/gpu_check.py summary RUN_DIR [RUN_DIR ...]

MFU is reported against the GPU's dense bf16 datasheet figure, not a measured matmul peak: a
measured peak flatters (it is what this box reaches today), the datasheet is what the card is
sold as. Only a few cards are known; any other needs ``--peak-tflops``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

# Dense (no sparsity) bf16 tensor-core TFLOP/s from NVIDIA's datasheets, matched in order against
# torch.cuda.get_device_name() (e.g. "NVIDIA H100 80GB HBM3" is the SXM part): specific names first.
DATASHEET_BF16_TFLOPS = (
    ("GH200", 989.0),
    ("H200 NVL", 835.0),
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
)


class Refusal(Exception):
    """The check cannot run here; the message is the one line the user sees."""


def datasheet_tflops(name: str) -> float | None:
    for key, tflops in DATASHEET_BF16_TFLOPS:
        if key in name:
            return tflops
    return None


def preflight(peak_tflops: float | None) -> float:
    """The per-GPU peak to use; refuses a machine without CUDA, bf16 or flash attention."""
    import torch

    if not torch.cuda.is_available():
        raise Refusal(f"no CUDA device (torch {torch.__version__}, CUDA build {torch.version.cuda}, "
                      "torch.cuda.is_available() is False): run this on a GPU machine")
    name = torch.cuda.get_device_name(0)
    if not torch.cuda.is_bf16_supported():
        raise Refusal(f"{name} has no bf16 support; the check trains in bf16")
    from koda.model.flash import unavailable_reason

    reason = unavailable_reason()
    if reason:
        raise Refusal(f"flash attention cannot run on {name}: {reason} (pip install flash-attn)")
    peak = peak_tflops or datasheet_tflops(name)
    if not peak:
        raise Refusal(f"no datasheet bf16 peak known for {name!r}: pass --peak-tflops T (dense bf16 TFLOP/s)")
    print(f"gpu_check: {name}, {torch.cuda.device_count()} device(s), peak {peak:g} TFLOP/s dense bf16 "
          f"({'given' if peak_tflops else 'datasheet'})", file=sys.stderr)
    return peak


def write_ds_config(name: str, out: str, warmup: int) -> None:
    """A copy of a shipped ds_config with a short warm-up, so a short run passes koda's schedule check."""
    from koda.distributed import ds_config

    raw = ds_config.load(name)
    raw.setdefault("scheduler", {}).setdefault("params", {})["warmup_num_steps"] = warmup
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(raw, indent=1))


def summary(run_dirs: list[str]) -> list[str]:
    """One line per run: median tokens/s and MFU over the logged steps after the first, last CE."""
    from koda.report.runs import load_run
    from koda.run_layout import RunLayout

    lines = []
    for run in run_dirs:
        if not RunLayout(run).metrics.is_file():
            lines.append(f"{run}: no metrics.jsonl")
            continue
        metrics = load_run(run)
        rows = metrics.by_step()
        perf = [rows[s] for s in metrics.scalars["perf/mfu"].steps[1:]] if metrics.has("perf/mfu") else []
        if not perf:                # the first window holds compilation and warm-up
            lines.append(f"{run}: too few logged steps for a figure")
            continue
        tps = statistics.median(r["perf/tokens_per_s"] for r in perf)
        mfu = statistics.median(r["perf/mfu"] for r in perf)
        lines.append(f"{run}: {tps:,.0f} tokens/s, MFU {mfu:.1%} (median of {len(perf)} windows), "
                     f"last train CE {metrics.scalars['train/ce'].last[1]:.3f}")
    return lines


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tools/gpu_check.py", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    pre = sub.add_parser("preflight", help="print the per-GPU peak TFLOP/s, or refuse in one line")
    pre.add_argument("--peak-tflops", type=float, help="dense bf16 TFLOP/s of one GPU (else from the datasheet table)")
    ds = sub.add_parser("ds-config", help="copy a ds_config with a short warm-up")
    ds.add_argument("name")
    ds.add_argument("out")
    ds.add_argument("--warmup", type=int, default=5)
    su = sub.add_parser("summary", help="tokens/s and MFU of finished runs")
    su.add_argument("run_dirs", nargs="+")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "preflight":
            print(f"{preflight(args.peak_tflops):g}")
        elif args.command == "ds-config":
            write_ds_config(args.name, args.out, args.warmup)
        else:
            print("\n".join(summary(args.run_dirs)))
    except Refusal as err:
        print(f"gpu_check: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
