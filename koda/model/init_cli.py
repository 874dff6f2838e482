"""``koda init-check``: print the singular-value spectrum of a freshly initialised model."""

from __future__ import annotations

import argparse

import torch

from koda.model.config import PRESETS, preset
from koda.model.init import spectrum_report
from koda.model.transformer import KodaForCausalLM


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="koda init-check", description=__doc__)
    parser.add_argument("--model", default="smoke", choices=sorted(PRESETS))
    parser.add_argument("--init", default=None, choices=["normal", "orthogonal"],
                        help="override the preset's init")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    cfg = preset(args.model)
    if args.init:
        cfg = cfg.replace(init=args.init)
    torch.manual_seed(args.seed)
    rows = spectrum_report(KodaForCausalLM(cfg), cfg)
    print(f"init={cfg.init} model={args.model}: singular values per weight "
          "(MP = Marchenko-Pastur edges of an i.i.d. normal matrix of that shape)")
    print(f"{'weight':<48} {'shape':<16} {'min':>8} {'mean':>8} {'max':>8} {'cond':>8} {'MP low':>8} {'MP high':>8}")
    for r in rows:
        print(f"{r.name:<48} {str(list(r.shape)):<16} {r.smin:8.4f} {r.smean:8.4f} {r.smax:8.4f} "
              f"{r.condition:8.2f} {r.mp_low:8.4f} {r.mp_high:8.4f}")
    return 0
