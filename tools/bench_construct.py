#!/usr/bin/env python
"""Host memory of building the actor: whole model on every rank (the old path) vs partitioned.

In one run, on this machine, two 2-rank launches build the actor engine of a preset (ZeRO-3,
AutoEP 2, AdamW) with ``build_engine``: once with ``full_build=True`` (``KodaForCausalLM``
whole on every rank, then ``deepspeed.initialize``), once partitioned (``zero.Init``). Each
rank reports how far its resident memory rose above where it stood before the build (the
kernel's high-water mark, reset at the start; ``koda.distributed.host_memory``), and where it
settled. Then it prints the model of the build for a preset on a larger world: parameters x
bytes / shards, plus the largest transient (one module gathered whole).

    python tools/bench_construct.py                          # small on 2 ranks; large on 64 modelled
    python tools/bench_construct.py --model smoke --model-world 8
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
from pathlib import Path

import torch

from koda.model import KodaForCausalLM, ModelConfig, preset

GIB = 2**30


def worker(args) -> None:
    """On each rank: build the actor engine one way, report the growth of resident memory."""
    from koda.distributed.rank_start import start_rank

    start_rank()
    from koda.distributed import comm, ds_config
    from koda.distributed.accelerator import supports_bf16
    from koda.distributed.engine import build_engine
    from koda.distributed.host_memory import PeakWindow, rss_bytes

    cfg = preset(args.model)
    raw = ds_config.load("zero3_ep_smoke.json")
    plan = ds_config.resolve(raw, model=cfg, world_size=comm.world_size(), train_steps=1000,
                             bf16_supported=supports_bf16())
    torch.manual_seed(0)
    comm.barrier()
    with PeakWindow() as window:
        engine = build_engine("actor", functools.partial(KodaForCausalLM, cfg), plan, full_build=args.full_build)
    settled = rss_bytes() - window.start
    rows = comm.all_reduce_sum(torch.tensor([[window.growth, settled] if r == comm.rank() else [0, 0]
                                             for r in range(comm.world_size())], dtype=torch.float64))
    if comm.rank() == 0:
        Path(args.worker_out).write_text(json.dumps({"peak": rows[:, 0].tolist(), "settled": rows[:, 1].tolist(),
                                                     "precision": plan.precision, "ep": plan.ep_size}))
    del engine


def launch(args, full_build: bool) -> dict:
    from koda.distributed.local_launch import launch_ranks

    out = Path(tempfile.mkdtemp()) / "construct.json"
    worker = ["--worker-out", str(out), "--model", args.model, *(["--full-build"] if full_build else [])]
    proc = launch_ranks(__file__, worker, world=2, module=False)
    if proc.returncode != 0:
        sys.exit(f"bench_construct: the 2-rank build failed:\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())


def parameter_counts(cfg: ModelConfig) -> tuple[int, int]:
    """(all parameters, the largest module's own parameters), counted on the meta device."""
    with torch.device("meta"):
        model = KodaForCausalLM(cfg)
    total = sum(p.numel() for p in model.parameters())
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    return total, largest


def modelled_gib(cfg: ModelConfig, world: int, weight_bytes: int) -> dict:
    """Per-rank memory of the network while it is built, modelled (GiB).

    Dense weights are ZeRO-3 partitions over the world; experts are first split over the
    expert-parallel group (E/ep per rank), then partitioned over the expert-data-parallel group
    (world/ep ranks): 1/world of them either way. The transient is the largest module gathered
    whole (AutoEP gathers one MoE layer's experts at a time, then keeps this rank's slice).
    ZeRO-3's optimizer states come on top: with bf16 weights, an fp32 master, fp32 gradient
    partition and Adam's two moments, 16 bytes per parameter sharded the same way.
    """
    total, largest = parameter_counts(cfg)
    weights, transient = total * weight_bytes / world, largest * weight_bytes
    return {"params": total, "whole_fp32": 4 * total / GIB, "weights": weights / GIB, "transient": transient / GIB,
            "build": (weights + transient) / GIB, "states": 16 * total / world / GIB}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="small", help="preset measured on 2 local ranks")
    p.add_argument("--model-preset", default="large", help="preset whose per-rank figure is modelled")
    p.add_argument("--model-world", type=int, default=64)
    p.add_argument("--model-ep", type=int, default=8)
    p.add_argument("--full-build", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--worker-out", help=argparse.SUPPRESS)
    p.add_argument("--local_rank", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker_out:
        worker(args)
        return
    cfg = preset(args.model)
    old = launch(args, full_build=True)
    new = launch(args, full_build=False)
    bytes_ = 2 if new["precision"] in ("bf16", "fp16") else 4
    model = modelled_gib(cfg, 2, bytes_)
    print(f"{args.model}: {model['params'] / 1e6:.1f}M parameters ({model['whole_fp32']:.3f} GiB in fp32), "
          f"2 ranks, ZeRO-3, AutoEP {new['ep']}, AdamW, {new['precision']}")
    print("resident memory above the pre-build level, per rank (GiB)   peak            settled")
    for label, r in (("whole model on every rank (old path)", old), ("partitioned construction (zero.Init)", new)):
        print(f"  {label:<44} {', '.join(f'{g / GIB:.3f}' for g in r['peak']):<16}"
              f"{', '.join(f'{g / GIB:.3f}' for g in r['settled'])}")
    ratio = max(old["peak"]) / max(new["peak"])
    print(f"  peak old / new: {ratio:.2f}x. Model of the partitioned build: weights {model['weights']:.3f} + one "
          f"module {model['transient']:.3f} = {model['build']:.3f} GiB, then ZeRO-3's optimizer states and "
          "DeepSpeed's buffers on top")
    big = preset(args.model_preset)
    large = modelled_gib(big, args.model_world, 2)
    print(f"{args.model_preset}, modelled: {large['params'] / 1e9:.1f}B parameters, {args.model_world} ranks, "
          f"AutoEP {args.model_ep}, bf16 weights")
    print(f"  old path: the whole model in fp32 on every rank first: {large['whole_fp32']:.1f} GiB per rank")
    print(f"  partitioned: weights {large['weights']:.2f} GiB + largest module gathered {large['transient']:.2f} GiB"
          f" = {large['build']:.2f} GiB per rank while building; ZeRO-3's optimizer states add "
          f"{large['states']:.2f} GiB (16 bytes per parameter / {args.model_world})")

if __name__ == "__main__":
    main()
