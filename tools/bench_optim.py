#!/usr/bin/env python
"""Optimizers on the smoke model, one process, the same data and seed: AdamW vs K-FAC vs SOAP.

In one run, on this machine, each optimizer trains the same initial model on the same
batches of tokenised text (the Python standard library) and is evaluated on the same
validation windows every --eval-every steps. Printed per run: seconds per step and the
ratio to AdamW's, validation loss at each evaluation, steps and wall-clock seconds to the
target validation loss (default: the worst final loss of all runs, a level every run
reaches), the final loss after the fixed step budget, each optimizer's state memory
(K-FAC's includes its factors and decompositions), and where K-FAC's extra time goes
(statistics in the hooks, factor averaging, decompositions, preconditioning).

--peers runs second-order optimizers from the `pytorch-optimizer` package (a dev extra)
on the same footing: SOAP (Adam in the eigenbasis of Shampoo's factors; default `soap`)
and Shampoo. Both precondition every parameter, the [E, out, in] expert tensors with one
factor per axis, and refresh their bases every --inv-every steps, like K-FAC.

With --latency, two more AdamW runs apply the torus-latency scaling (kappa --kappa) for the
file-order and the optimised placement of --topology, and their loss curves are printed
next to plain AdamW's (the scaling only changes each group's learning rate).

    python tools/bench_optim.py --steps 150 --latency --peers soap,shampoo
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from koda.config.run import DataConfig
from koda.data.loader import BatchLayout, TokenStream, TrainLoader, eval_batches
from koda.data.prepare import prepare
from koda.data.shards import open_split
from koda.model import KodaForCausalLM, preset
from koda.optim import KFACConfig, KFACPreconditioner, ParamGrads
from koda.optim.optimizer import KodaOptimizer, parameter_groups


def data(args):
    cfg = DataConfig(sources=("stdlib",), max_corpus_mb=args.corpus_mb, tokenizer=f"{args.cache}/tok.model",
                     tokenizer_corpus_mb=1.0, shards_dir=f"{args.cache}/shards", val_fraction=0.05,
                     seq_len=args.seq_len)
    prepare(cfg, preset("smoke").vocab_size, log=lambda *_: None)
    layout = BatchLayout(args.seq_len, args.batch, 1, 0, 1)
    train = TrainLoader(TokenStream(open_split(cfg.shards_dir, "train")), layout, seed=args.seed)
    batches = [train.next_batches()[0] for _ in range(args.steps)]
    val = eval_batches(TokenStream(open_split(cfg.shards_dir, "val")), layout, args.eval_batches)
    return batches, val


def loss_of(model, batch):
    logits = model(batch[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))


@torch.no_grad()
def evaluate(model, val) -> float:
    model.eval()
    out = float(np.mean([loss_of(model, b).item() for b in val]))
    model.train()
    return out


class Timed:
    """Wraps the preconditioner's phases to total their seconds."""

    def __init__(self, pre: KFACPreconditioner):
        self.seconds = {"update_factors": 0.0, "decompose": 0.0, "precondition": 0.0}
        for name in self.seconds:
            setattr(pre, name, self._wrap(name, getattr(pre, name)))

    def _wrap(self, name, fn):
        def run(*a, **k):
            start = time.perf_counter()
            out = fn(*a, **k)
            self.seconds[name] += time.perf_counter() - start
            return out
        return run


def state_mb(opt, pre) -> float:
    """MiB of tensors the optimizer keeps between steps (moments, factors, bases)."""
    def size(x):
        if torch.is_tensor(x):
            return x.numel() * x.element_size()
        if isinstance(x, dict):
            return sum(size(v) for v in x.values())
        if isinstance(x, (list, tuple)):
            return sum(size(v) for v in x)
        return 0
    total = sum(size(s) for s in opt.state.values())
    if pre is not None:
        total += sum(size(t) for u in pre.units for t in (u.A, u.S, u.decomposition))
    return total / 2**20


def peer(name: str, model, args):
    """SOAP / Shampoo from pytorch-optimizer (hyper-parameters: see --help)."""
    import pytorch_optimizer

    if name == "soap":
        return pytorch_optimizer.SOAP(model.parameters(), lr=args.soap_lr,
                                      precondition_frequency=args.inv_every,
                                      max_precondition_dim=args.soap_max_dim), None
    if name == "shampoo":
        return pytorch_optimizer.Shampoo(model.parameters(), lr=args.shampoo_lr, momentum=0.9,
                                         preconditioning_compute_steps=args.inv_every), None
    raise SystemExit(f"unknown peer {name!r} (soap, shampoo)")


def run(name, args, batches, val, build, cfg=None) -> dict:
    torch.manual_seed(args.seed)
    model = KodaForCausalLM(cfg if cfg is not None else preset("smoke"))
    opt, pre = build(model)
    timed = Timed(pre) if pre is not None else None
    curve, fwd_bwd, total = [], 0.0, 0.0
    for step, batch in enumerate(batches):
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = loss_of(model, batch)
        if not torch.isfinite(loss):
            raise SystemExit(f"{name} diverged: training loss {loss.item()} at step {step + 1}")
        loss.backward()
        mid = time.perf_counter()
        opt.step()
        end = time.perf_counter()
        fwd_bwd += mid - start
        total += end - start
        if (step + 1) % args.eval_every == 0 or step + 1 == len(batches):
            curve.append({"step": step + 1, "seconds": round(total, 2), "val_loss": round(evaluate(model, val), 4)})
            print(f"  {name:>18} step {step + 1:4d}  {total:7.1f}s  val {curve[-1]['val_loss']:.4f}", flush=True)
    out = {"name": name, "s_per_step": total / len(batches), "fwd_bwd_s_per_step": fwd_bwd / len(batches),
           "curve": curve, "final_val_loss": curve[-1]["val_loss"], "state_mb": state_mb(opt, pre)}
    if pre is not None:
        out["kfac_phase_s_per_step"] = {k: v / len(batches) for k, v in timed.seconds.items()}
        out["factor_mb"] = sum(t.numel() * t.element_size() for u in pre.units for t in (u.A, u.S)) / 2**20
        out["decomposition_mb"] = sum(t.numel() * t.element_size() for u in pre.units
                                      for t in u.decomposition.values()) / 2**20
    return out


def warm_up(batches, cfg=None) -> None:
    """Two untimed steps of a throwaway model first: the process's first steps pay for
    allocator growth and kernel set-up, which would otherwise land on whichever run goes first."""
    model = KodaForCausalLM(cfg if cfg is not None else preset("smoke"))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for batch in batches[:2]:
        opt.zero_grad(set_to_none=True)
        loss_of(model, batch).backward()
        opt.step()


def to_target(result, target):
    for point in result["curve"]:
        if point["val_loss"] <= target:
            return point["step"], point["seconds"]
    return None, None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--eval-every", type=int, default=25)
    ap.add_argument("--eval-batches", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--corpus-mb", type=float, default=4.0)
    ap.add_argument("--cache", default="/tmp/kfacbench")
    ap.add_argument("--adamw-lr", type=float, default=3e-3)
    ap.add_argument("--kfac-lr", type=float, default=0.1)
    ap.add_argument("--damping", type=float, default=1e-3)
    ap.add_argument("--kl-clip", type=float, default=1e-3)
    ap.add_argument("--inv-every", type=int, default=10)
    ap.add_argument("--inverse-dtype", default="float32", help="K-FAC decompositions (config default float64)")
    ap.add_argument("--target", type=float, default=None, help="validation loss (default: worst final loss)")
    ap.add_argument("--latency", action="store_true", help="add the torus-latency runs")
    ap.add_argument("--topology", default="launchers/topologies/torus-4x4x2x2.yaml")
    ap.add_argument("--kappa", type=float, default=1e-3, help="per microsecond of modelled latency")
    ap.add_argument("--no-kfac", action="store_true", help="skip the K-FAC run (e.g. with --latency alone)")
    ap.add_argument("--peers", default="soap", help="comma list of soap, shampoo ('' for none)")
    ap.add_argument("--soap-lr", type=float, default=3e-3, help="pytorch-optimizer's SOAP default")
    ap.add_argument("--soap-max-dim", type=int, default=10000,
                    help="SOAP skips axes longer than this (package default; 4096 = the vocab axis)")
    ap.add_argument("--shampoo-lr", type=float, default=1e-3, help="pytorch-optimizer's Shampoo default")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    batches, val = data(args)
    print(f"smoke model, {args.steps} steps of {args.batch}x{args.seq_len} tokens, "
          f"{torch.get_num_threads()} threads")

    def adamw(model, dense=1.0, expert=1.0):
        return KodaOptimizer(parameter_groups(model, dense, expert), lr=args.adamw_lr, rule="adamw",
                             betas=(0.9, 0.95)), None

    def kfac(model):
        pre = KFACPreconditioner(model, KFACConfig(inv_update_steps=args.inv_every, damping=args.damping,
                                                   kl_clip=args.kl_clip, inverse_dtype=args.inverse_dtype),
                                 lr=args.kfac_lr)
        return KodaOptimizer(model.parameters(), lr=args.kfac_lr, rule="sgd", momentum=0.9,
                             preconditioner=pre, grads=ParamGrads(model)), pre

    warm_up(batches)
    results = [run("adamw", args, batches, val, adamw)]
    if not args.no_kfac:
        results.append(run("kfac", args, batches, val, kfac))
    for name in filter(None, args.peers.split(",")):
        results.append(run(name, args, batches, val, lambda m, n=name: peer(n, m, args)))
    if args.latency:
        from koda.optim.latency import latency_scales
        from koda.topology import load_topology, naive_placement, place

        topo = load_topology(args.topology)
        for label, placement in (("file order", naive_placement(topo)), ("optimised", place(topo))):
            s = latency_scales(topo, placement, 0, args.kappa)
            print(f"  latency {label}: dense {s.dense_latency_us:.0f}us -> x{s.dense:.3f}, "
                  f"expert {s.expert_latency_us:.0f}us -> x{s.expert:.3f}")
            results.append(run(f"adamw+lat({label})", args, batches, val,
                               lambda m, s=s: adamw(m, s.dense, s.expert)))

    base = results[0]
    target = args.target if args.target is not None else max(r["final_val_loss"] for r in results)
    print(f"\ntarget validation loss {target:.4f}")
    print(f"{'run':>20} {'s/step':>8} {'x adamw':>8} {'steps@tgt':>10} {'s@tgt':>8} {'x adamw':>8} {'final':>8}"
          f" {'state MiB':>10}")
    base_steps, base_s = to_target(base, target)
    for r in results:
        steps, secs = to_target(r, target)
        ratio = f"{secs / base_s:8.2f}" if secs is not None and base_s else f"{'-':>8}"
        print(f"{r['name']:>20} {r['s_per_step']:8.3f} {r['s_per_step'] / base['s_per_step']:8.2f} "
              f"{steps if steps else '-':>10} {secs if secs else '-':>8} {ratio} {r['final_val_loss']:8.4f}"
              f" {r['state_mb']:10.1f}")
    if args.json:
        args.json.write_text(json.dumps({"target": target, "results": results}, indent=1))
    if args.no_kfac:
        return
    k = next(r for r in results if r["name"] == "kfac")
    print(f"\nK-FAC factor memory {k['factor_mb']:.1f} MiB (fp32), decompositions {k['decomposition_mb']:.1f} MiB")
    extra = k["s_per_step"] - base["s_per_step"]
    hooks = k["fwd_bwd_s_per_step"] - base["fwd_bwd_s_per_step"]
    print(f"K-FAC extra time per step {extra:.3f}s: hooks in forward/backward {hooks:.3f}s, " + ", ".join(
        f"{n} {v:.3f}s" for n, v in k["kfac_phase_s_per_step"].items()))
    if not math.isfinite(k["final_val_loss"]):
        raise SystemExit("K-FAC diverged")


if __name__ == "__main__":
    main()
