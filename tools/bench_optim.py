#!/usr/bin/env python
"""Tuned optimizers on one model: AdamW, Muon, SOAP and K-FAC, each at its best learning rate.

One process, the same data (the Python standard library, tokenised), the same warm-up +
cosine schedule and batch for every run. Two phases:

1. sweep: each optimizer trains from the same initial model (`--sweep-seed`) at every learning
   rate of its grid (`--grid`, at least four values on a log scale); the best final validation
   loss picks its learning rate (a best at the grid's edge is flagged: widen the grid);
2. seeds: each optimizer again at its chosen rate with each of `--seeds`, other seeds than the
   sweep's (model init and batch order change), so the reported figures are not the ones the
   rate was picked on. Only these runs' timings are reported.

Reported per optimizer at its chosen rate, mean and spread (max - min) over seeds: steps and
seconds to the target validation loss (default: the worst final loss of tuned AdamW's seeds,
a level AdamW reaches in every seed) and their ratio to AdamW's, the loss at the last step,
the loss at a fixed wall-clock budget (default: AdamW's mean training time), seconds per
step, and the optimizer's state memory (K-FAC's factors and inverses included). K-FAC's time
is broken down by phase. Plots (`--out`): validation loss against steps and against seconds
(mean over seeds, band = min to max), and final loss against learning rate for the sweep.
Runs are cached in `--out/runs/` with the settings they were made with, so an interrupted
benchmark continues and a changed setting re-runs what it changes; `--jobs N` makes N runs at
once in worker processes (with `--threads 1`, one per core); timings of a run come from the
process that ran it (`--fresh` re-runs everything).

Optimizers:
  adamw       KODA's AdamW (betas 0.9, 0.95)
  muon        torch.optim.Muon on the 2-D hidden weight matrices, AdamW (same lr) on the rest,
              as its authors use it; KODA's 3-D expert tensors go to AdamW
  koda-muon   KODA's Muon (``optimizer.name: muon``): the experts' matrices orthogonalised too
  soap        pytorch-optimizer's SOAP (a dev extra), bases every --soap-every steps, axes longer
              than --soap-max-dim (the vocabulary) left unrotated
  kfac        KODA's K-FAC + SGD-momentum 0.9 on the layers it factors, AdamW (--kfac-adamw-lr) on
              the rest; factors every 5 steps, inverses every 25, no KL clip, dtype auto (the
              schedule measured as cheapest without a loss at 100 steps; see docs/optimizer.md)
  kfac-rms    kfac with each unit's (each expert's) preconditioned gradient rescaled to RMS
              --kfac-update-rms (``optimizer.kfac.update_rms``): K-FAC's direction, Muon's step size
  rms-sgd     the control for kfac-rms: the same layers, RMS rescaling, momentum and rest, with a
              damping so large (1e12) that the preconditioner is a scalar: what the curvature adds is
              kfac-rms's gap to this (its time per step is K-FAC's, so compare steps, not seconds)
  frozen-hidden  the control for kfac: AdamW on what K-FAC does not factor (embeddings, norms,
              lm_head), the layers K-FAC factors left as initialised; what K-FAC adds is its gap to this
  adamw-split  the control for K-FAC's two rates: AdamW on the layers K-FAC factors at lr, on the rest
              at --kfac-adamw-lr, i.e. K-FAC's rest unchanged and AdamW in place of K-FAC

    python tools/bench_optim.py --preset smoke --steps 300 --out runs/bench-optim-smoke
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from koda.config.run import DataConfig
from koda.data.loader import BatchLayout, TokenStream, TrainLoader, eval_batches
from koda.data.prepare import prepare
from koda.data.shards import open_split
from koda.model import KodaForCausalLM, preset
from koda.optim import KFACConfig, KFACPreconditioner
from koda.optim.muon import Muon
from koda.report.optim_bench import plot, print_table, summarise
from koda.report.optim_candidates import GRIDS, KFAC_FAMILY, Stepper, build


def model_config(args):
    return replace(preset(args.preset), max_seq_len=max(args.seq_len, 16))


def data(args, seed: int):
    """`args.steps` training batches [batch, seq_len + 1] in `seed`'s order, and fixed validation windows."""
    vocab = model_config(args).vocab_size
    cfg = DataConfig(sources=("stdlib",), max_corpus_mb=args.corpus_mb, tokenizer=f"{args.cache}/tok-{vocab}.model",
                     tokenizer_corpus_mb=1.0, shards_dir=f"{args.cache}/shards-{vocab}", val_fraction=0.05,
                     seq_len=args.seq_len)
    prepare(cfg, vocab, log=lambda *_: None)
    layout = BatchLayout(args.seq_len, args.batch, 1, 0, 1)
    train = TrainLoader(TokenStream(open_split(cfg.shards_dir, "train")), layout, seed=seed)
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


def schedule_of(args):
    """Linear warm-up over --warmup steps, then cosine to 10 % of the peak at the last step."""
    def factor(step: int) -> float:
        if step < args.warmup:
            return (step + 1) / args.warmup
        t = (step - args.warmup) / max(1, args.steps - args.warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
    return factor


class Timed:
    """Totals the seconds of K-FAC's phases (the preconditioner's own methods, wrapped)."""

    PHASES = ("update_factors", "decompose", "precondition")

    def __init__(self, pre: KFACPreconditioner):
        self.seconds = dict.fromkeys(self.PHASES, 0.0)
        for name in self.PHASES:
            setattr(pre, name, self._wrap(name, getattr(pre, name)))

    def _wrap(self, name, fn):
        def run(*a, **k):
            start = time.perf_counter()
            out = fn(*a, **k)
            self.seconds[name] += time.perf_counter() - start
            return out
        return run


def state_mb(stepper: Stepper) -> float:
    """MiB of tensors kept between steps: moments, momentum, factors, inverses."""
    def size(x):
        if torch.is_tensor(x):
            return x.numel() * x.element_size()
        if isinstance(x, dict):
            return sum(size(v) for v in x.values())
        if isinstance(x, list | tuple):
            return sum(size(v) for v in x)
        return 0
    total = size(stepper.state)
    pre = stepper.pre
    if pre is not None:
        total += sum(size([u.A, u.S, u.decomposition]) for u in pre.units)
    for o in stepper.optimizers:
        if isinstance(getattr(o, "preconditioner", None), Muon):
            total += size(o.preconditioner.state_dict())
    return total / 2**20


def run(name: str, lr: float, seed: int, args, batches, val, cfg=None) -> dict:
    torch.manual_seed(seed)
    model = KodaForCausalLM(cfg if cfg is not None else model_config(args))
    stepper = build(name, lr, model, args, schedule_of(args))
    timed = Timed(stepper.pre) if stepper.pre is not None else None
    curve, fwd_bwd, total = [], 0.0, 0.0
    for step, batch in enumerate(batches):
        start = time.perf_counter()
        stepper.zero_grad()
        loss = loss_of(model, batch)
        if not torch.isfinite(loss):
            curve.append({"step": step + 1, "seconds": round(total, 2), "val_loss": math.inf})
            break
        loss.backward()
        mid = time.perf_counter()
        stepper.step()
        total += time.perf_counter() - start
        fwd_bwd += mid - start
        if (step + 1) % args.eval_every == 0 or step + 1 == len(batches):
            curve.append({"step": step + 1, "seconds": round(total, 3), "val_loss": round(evaluate(model, val), 4)})
    steps = curve[-1]["step"]
    out = {"name": name, "lr": lr, "seed": seed, "s_per_step": total / steps, "fwd_bwd_s_per_step": fwd_bwd / steps,
           "curve": curve, "final_val_loss": curve[-1]["val_loss"], "state_mb": state_mb(stepper),
           "diverged": not math.isfinite(curve[-1]["val_loss"])}
    if timed is not None:
        out["kfac_phase_s_per_step"] = {k: v / steps for k, v in timed.seconds.items()}
        out["kfac_apply_dtypes"] = {u.name: str(u.decomposition["inv_a"].dtype).removeprefix("torch.")
                                    for u in stepper.pre.units if u.decomposition}
    return out


SETTINGS = ("preset", "steps", "warmup", "batch", "seq_len", "eval_batches", "corpus_mb")
OWN_SETTINGS = {"kfac": ("kfac_factor_every", "inv_every", "kfac_skip", "damping", "factor_decay", "kfac_adamw_lr",
                         "kl_clip", "inverse_dtype"),
                "soap": ("soap_every", "soap_max_dim")}


def settings_of(name: str, args) -> dict:
    """What a run's training depends on besides its optimizer, rate and seed: a cached run made
    with other settings is not this run (evaluation cadence excluded: it does not change training)."""
    own = OWN_SETTINGS["soap"] if name == "soap" else OWN_SETTINGS["kfac"] if name in KFAC_FAMILY else ()
    keys = SETTINGS + own + (("kfac_update_rms",) if name in ("kfac-rms", "rms-sgd") else ())
    # named only when on, so that runs cached before the option existed stay valid
    keys += ("kfac_nesterov",) if name in ("kfac", "kfac-rms", "rms-sgd") and args.kfac_nesterov else ()
    return {k: getattr(args, k) for k in keys}


def cached_run(name: str, lr: float, seed: int, args, data_of, curve: bool = True, fresh: bool | None = None) -> dict:
    """The run from `--out/runs/` when one was made with these settings (and, where `curve`, at
    this evaluation cadence), else (or with `fresh`, default --fresh) run now and cache it."""
    path = args.out / "runs" / f"{name}-lr{lr:g}-seed{seed}.json"
    if path.is_file() and not (args.fresh if fresh is None else fresh):
        cached = json.loads(path.read_text())
        if cached.get("settings") == settings_of(name, args) and (not curve or cached.get("eval_every") ==
                                                                   args.eval_every):
            return cached
    batches, val = data_of(seed)
    result = run(name, lr, seed, args, batches, val)
    result.update(settings=settings_of(name, args), eval_every=args.eval_every)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(path)
    final = "diverged" if result["diverged"] else f"{result['final_val_loss']:.4f}"
    print(f"  {name:>9} lr {lr:<7g} seed {seed}: final val {final}  {result['s_per_step']:.3f} s/step", flush=True)
    return result


class Runs:
    """Runs `(name, lr, seed)` jobs through the cache, in this process or `jobs` worker processes
    at once (each with `--threads` threads: on a shared machine 1, so that runs do not wait on
    each other's threads); the timings of a run are those of the process that ran it."""

    def __init__(self, args):
        self.args, self._loaded = args, {}

    def data_of(self, seed: int):
        if seed not in self._loaded:
            self._loaded.clear()
            self._loaded[seed] = data(self.args, seed)
        return self._loaded[seed]

    def __call__(self, jobs: list[tuple[str, float, int]], curve: bool) -> list[dict]:
        if self.args.jobs <= 1:
            return [cached_run(n, lr, s, self.args, self.data_of, curve) for n, lr, s in jobs]
        data(self.args, 0)                          # tokenizer and shards made once, before the workers
        with multiprocessing.get_context("spawn").Pool(self.args.jobs, initializer=_worker_init,
                                                       initargs=(self.args,)) as pool:
            for _ in pool.imap_unordered(_worker_run, [(*job, curve) for job in jobs]):
                pass
        return [cached_run(n, lr, s, self.args, self.data_of, curve, fresh=False) for n, lr, s in jobs]  # made now


_WORKER: Runs | None = None


def _worker_init(args) -> None:
    global _WORKER
    if args.threads:
        torch.set_num_threads(args.threads)
    _WORKER = Runs(args)


def _worker_run(job: tuple[str, float, int, bool]) -> None:
    name, lr, seed, curve = job
    cached_run(name, lr, seed, _WORKER.args, _WORKER.data_of, curve)


def print_kfac_profile(tuned: dict[str, list[dict]]) -> None:
    name = "kfac-rms" if "kfac-rms" in tuned else "kfac"
    if name not in tuned or "adamw" not in tuned:
        return
    k, a = tuned[name][0], tuned["adamw"][0]
    extra = k["s_per_step"] - a["s_per_step"]
    hooks = k["fwd_bwd_s_per_step"] - a["fwd_bwd_s_per_step"]
    phases = ", ".join(f"{n} {v:.4f}s" for n, v in k["kfac_phase_s_per_step"].items())
    print(f"\nK-FAC (seed {k['seed']}) extra time per step {extra:.4f}s over AdamW: hooks in forward/backward "
          f"{hooks:.4f}s, {phases}")
    dtypes = list(k["kfac_apply_dtypes"].values())
    print(f"K-FAC apply dtypes: {dtypes.count('float32')} units fp32, {dtypes.count('float64')} fp64")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="smoke", help="model preset (smoke, small)")
    ap.add_argument("--optimizers", default="adamw,muon,soap,kfac", help=f"comma list of {', '.join(GRIDS)}")
    ap.add_argument("--grid", action="append", default=[], metavar="NAME=LR,LR,...",
                    help="an optimizer's learning-rate grid (repeatable); defaults: "
                         + "; ".join(f"{k}={v}" for k, v in GRIDS.items()))
    ap.add_argument("--sweep-seed", type=int, default=0)
    ap.add_argument("--seeds", default="1,2,3", help="the reported runs at each chosen rate ('': sweep only)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--eval-every", type=int, default=25)
    ap.add_argument("--eval-batches", type=int, default=4)
    ap.add_argument("--corpus-mb", type=float, default=4.0)
    ap.add_argument("--cache", default="/tmp/kfacbench", help="tokenizer and shards")
    ap.add_argument("--out", type=Path, default=Path("runs/bench-optim"))
    ap.add_argument("--fresh", action="store_true", help="ignore cached runs in --out/runs")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (default: torch's; use 1 on a machine other work shares, where "
                         "threads waiting for each other slow every step many times over)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="runs at once, each in its own process (with --threads 1: one run per core)")
    ap.add_argument("--kfac-factor-every", type=int, default=5, help="K-FAC statistics every N steps")
    ap.add_argument("--inv-every", type=int, default=25, help="K-FAC inverses every N steps")
    ap.add_argument("--kfac-skip", default="lm_head",
                    help="comma list of module-name regexes K-FAC leaves to AdamW (e.g. lm_head,experts)")
    ap.add_argument("--soap-every", type=int, default=10, help="SOAP's bases every N steps (its default)")
    ap.add_argument("--damping", type=float, default=KFACConfig.damping)
    ap.add_argument("--factor-decay", type=float, default=KFACConfig.factor_decay,
                    help="K-FAC's running average of the factors, per statistics update")
    ap.add_argument("--kfac-adamw-lr", type=lambda v: None if v.lower() == "none" else float(v), default=3e-3,
                    help="AdamW at this peak lr on what K-FAC does not precondition ('none': SGD at K-FAC's lr)")
    ap.add_argument("--kl-clip", type=lambda v: None if v.lower() == "none" else float(v), default=None,
                    help="K-FAC's KL clip ('none': off, the default)")
    ap.add_argument("--inverse-dtype", default="auto")
    ap.add_argument("--kfac-update-rms", type=float, default=0.2, help="kfac-rms: each unit's update RMS (x lr)")
    ap.add_argument("--kfac-nesterov", action="store_true",
                    help="K-FAC's SGD step with Nesterov momentum (``optimizer.nesterov``)")
    ap.add_argument("--soap-max-dim", type=int, default=1024,
                    help="SOAP leaves axes longer than this unrotated (the 4096+ vocabulary axis by default)")
    ap.add_argument("--target", type=float, default=None, help="validation loss (default: tuned AdamW's worst final)")
    ap.add_argument("--time-budget", type=float, default=None, help="seconds (default: tuned AdamW's mean)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    names = [n for n in args.optimizers.split(",") if n]
    if "adamw" not in names:
        raise SystemExit("--optimizers must include adamw (the baseline)")
    names = ["adamw"] + [n for n in names if n != "adamw"]
    grids = dict(GRIDS)
    for item in args.grid:
        key, _, values = item.partition("=")
        if key not in GRIDS or not values:
            raise SystemExit(f"--grid {item!r}: expected NAME=LR,LR,... with NAME one of {', '.join(GRIDS)}")
        grids[key] = values
    seeds = [int(s) for s in args.seeds.split(",") if s]
    args.out.mkdir(parents=True, exist_ok=True)
    runs = Runs(args)

    print(f"{args.preset} model, {args.steps} steps of {args.batch}x{args.seq_len} tokens, warm-up {args.warmup}, "
          f"{args.threads or torch.get_num_threads()} threads, {args.jobs} run(s) at once")
    lrs = {name: [float(v) for v in grids[name].split(",")] for name in names}
    done = iter(runs([(n, lr, args.sweep_seed) for n in names for lr in lrs[n]], curve=False))
    sweep = {name: [next(done) for _ in lrs[name]] for name in names}
    for name in names:
        best = min(sweep[name], key=lambda r: (r["final_val_loss"], r["lr"]))
        edge = " (at the grid's edge: widen it)" if best["lr"] in (lrs[name][0], lrs[name][-1]) else ""
        print(f"{name}: best lr {best['lr']:g}{edge}; grid " + ", ".join(
            f"{r['lr']:g}: {r['final_val_loss']:.4f}" for r in sweep[name]))
    if not seeds:
        return                                        # --seeds "": the sweep alone
    best_lr = {name: min(sweep[name], key=lambda r: (r["final_val_loss"], r["lr"]))["lr"] for name in names}
    done = iter(runs([(n, best_lr[n], seed) for n in names for seed in seeds], curve=True))
    tuned = {name: [next(done) for _ in seeds] for name in names}

    target = args.target if args.target is not None else max(r["final_val_loss"] for r in tuned["adamw"])
    budget = args.time_budget if args.time_budget is not None else float(
        np.mean([r["curve"][-1]["seconds"] for r in tuned["adamw"]]))
    rows = summarise(tuned, target, budget)
    print_table(rows, target, budget, args.steps)
    print_kfac_profile(tuned)
    plot(tuned, sweep, args.out, f"{args.preset}: {args.steps} steps of {args.batch}x{args.seq_len}")
    (args.out / "results.json").write_text(json.dumps(
        {"args": {k: str(v) for k, v in vars(args).items()}, "target": target, "time_budget": budget,
         "table": rows, "sweep": {k: [(r["lr"], r["final_val_loss"]) for r in v] for k, v in sweep.items()}},
        indent=1))
    print(f"\nplots and results in {args.out}/")


if __name__ == "__main__":
    main()
