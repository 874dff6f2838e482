#!/usr/bin/env python
"""Training throughput: plain PyTorch on one process vs KODA's ZeRO-3 + AutoEP on 2 ranks.

In one run, on this machine:
  (a) the matmul peak in the training dtype (all cores),
  (b) a plain PyTorch loop (no DeepSpeed) of the same model, one process, all cores,
      AdamW, bf16 autocast when training in bf16, the same router balancing loss,
  (c) KODA's step (DeepSpeed ZeRO-3 + AutoEP, expert parallel 2) on 2 local ranks with the
      same global batch,
and prints tokens/s of each, the ratio (c)/(b), MFU of each against (a), peak memory per
rank against the ZeRO-3 estimate, and a profile of one (c) step grouped by kind of work.
Batches are uniform random tokens: throughput does not depend on the text, and no
tokenizer of the preset's vocabulary is needed.

On a GPU (``--device cuda``) (b) and (c) run on the same device(s), (c) on ``--ranks`` ranks
(one per GPU: 1 on a one-GPU machine), and ``--peak-tflops`` replaces (a) with the datasheet
figure, so MFU is against what the GPU is sold as (tools/gpu_check.sh passes it).

    python tools/bench_train.py                       # small preset, seq 512
    python tools/bench_train.py --model smoke --seq-len 256 --micro-batch 4
    python tools/bench_train.py --device cuda --ranks 1 --attention flash --peak-tflops 989
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

from koda.distributed.accelerator import configure_accelerator, supports_bf16
from koda.model import KodaForCausalLM, preset
from koda.objectives import next_token_loss
from koda.run.flops import measure_matmul_peak, train_flops_per_token
from koda.run.router_probe import RouterProbe

AUX_WEIGHT = 0.01


def rss_peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def rss_now_gb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**30


def batches(vocab: int, rows: int, seq: int, count: int, seed: int, device: str = "cpu") -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (rows, seq + 1), generator=gen).to(device) for _ in range(count)]


def model_config(args):
    """The preset with the attention kernel asked for (flash needs CUDA and flash-attn)."""
    return dataclasses.replace(preset(args.model), attention=args.attention)


def sync(device: str) -> None:
    """Wait for queued kernels, so wall-clock step times are the GPU's, not the launch queue's."""
    if device == "cuda":
        torch.cuda.synchronize()


def plain_pytorch(args, autocast: bool) -> dict:
    """(b): one process (every core, or one GPU), fp32 weights, with or without bf16 autocast."""
    torch.manual_seed(0)
    cfg = model_config(args)
    model = KodaForCausalLM(cfg).to(args.device)
    probe = RouterProbe(model, cfg.top_k)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    rows = args.ranks * args.micro_batch
    data = batches(cfg.vocab_size, rows, args.seq_len, args.warmup + args.steps, seed=1, device=args.device)
    times = []
    for i, batch in enumerate(data):
        sync(args.device)
        start = time.perf_counter()
        with torch.autocast(args.device, dtype=torch.bfloat16, enabled=autocast):
            logits = model(batch[:, :-1])
            aux, _ = probe.losses()
            loss = next_token_loss(logits, batch[:, 1:]) + AUX_WEIGHT * aux
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(args.device)
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    step = sorted(times)[len(times) // 2]
    return {"tokens_per_s": rows * args.seq_len / step, "step_s": step}


def koda_worker(args) -> None:
    """(c), on each rank: the actor engine exactly as koda.train builds it."""
    from koda.distributed.rank_start import start_rank

    start_rank()
    from koda.distributed import comm, ds_config
    from koda.distributed.accelerator import on_cpu
    from koda.distributed.engine import build_engine

    cfg = model_config(args)
    raw = ds_config.load("zero3_ep_smoke.json")
    raw["train_micro_batch_size_per_gpu"] = args.micro_batch
    raw["scheduler"]["params"]["warmup_num_steps"] = 1
    plan = ds_config.resolve(raw, model=cfg, world_size=comm.world_size(), train_steps=1000,
                             bf16_supported=supports_bf16() and not args.fp32)
    base_rss = rss_now_gb()
    torch.manual_seed(0)
    engine = build_engine("actor", functools.partial(KodaForCausalLM, cfg), plan)
    probe = RouterProbe(engine.module, cfg.top_k)
    device = "cuda" if torch.cuda.is_available() and not on_cpu() else "cpu"
    data = batches(cfg.vocab_size, args.micro_batch, args.seq_len, args.warmup + args.steps + 1, seed=2 + comm.rank(),
                   device=device)

    def step(batch):
        logits = engine(batch[:, :-1])
        aux, _ = probe.losses()
        engine.backward(next_token_loss(logits, batch[:, 1:]) + AUX_WEIGHT * aux)
        engine.step()

    times = []
    for i, batch in enumerate(data[:-1]):
        sync(device)
        comm.barrier()
        start = time.perf_counter()
        step(batch)
        sync(device)
        comm.barrier()
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    profile = profile_step(step, data[-1], record=comm.rank() == 0)   # every rank steps: collectives
    peaks = comm.all_reduce_sum(torch.tensor([rss_peak_gb() - base_rss if r == comm.rank() else 0.0
                                              for r in range(comm.world_size())]))
    if comm.rank() == 0:
        step_s = sorted(times)[len(times) // 2]
        result = {"tokens_per_s": comm.world_size() * args.micro_batch * args.seq_len / step_s, "step_s": step_s,
                  "bf16": plan.precision == "bf16", "world": plan.world,
                  "ep": plan.ep_size, "peak_rss_delta_gb": peaks.tolist(),
                  "gpu_peak_gb": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None,
                  "profile": profile}
        Path(args.worker_out).write_text(json.dumps(result))


def profile_step(step, batch, record: bool) -> dict:
    """Self CPU time of one step by kind of work, and the top operators (on the recording rank)."""
    from torch.profiler import ProfilerActivity, profile

    if not record:
        step(batch)
        return {}
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        step(batch)
    if os.environ.get("KODA_BENCH_SHAPES"):
        print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=25),
              file=sys.stderr)
    kinds = {"matmul": ("mm", "matmul", "addmm", "bmm", "linear"), "attention": ("attention", "flash"),
             "communication": ("all_gather", "reduce_scatter", "all_to_all", "all_reduce", "broadcast", "wait",
                               "c10d", "gloo", "shm", "barrier"),
             "optimizer": ("adam", "_foreach", "lerp", "addcdiv", "sqrt")}
    totals: dict[str, float] = {k: 0.0 for k in [*kinds, "other"]}
    rows = []
    for event in prof.key_averages():
        name, self_us = event.key, event.self_cpu_time_total
        kind = next((k for k, keys in kinds.items() if any(s in name.lower() for s in keys)), "other")
        totals[kind] += self_us / 1e6
        rows.append((self_us / 1e6, name))
    rows.sort(reverse=True)
    return {"by_kind_s": totals, "top_ops": [[name, round(sec, 4)] for sec, name in rows[:12]]}


def run_koda(args) -> dict:
    out = Path(tempfile.mkdtemp()) / "koda.json"
    from koda.distributed.local_launch import launch_ranks

    worker = ["--worker-out", str(out), "--model", args.model, "--seq-len", str(args.seq_len),
              "--micro-batch", str(args.micro_batch), "--steps", str(args.steps), "--warmup", str(args.warmup),
              "--attention", args.attention]
    proc = launch_ranks(__file__, worker + (["--fp32"] if args.fp32 else []), world=args.ranks, module=False)
    if proc.returncode != 0:
        sys.exit(f"bench_train: the {args.ranks}-rank run failed:\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())


def zero3_estimate_gb(n_params: int, world: int, bf16: bool) -> float:
    """M = (params + grads)/W + optimizer states/K with K = W (ZeRO-3 shards all three):
    16-bit params and grads (2 + 2 bytes) or fp32 (4 + 4); fp32 master + Adam m, v (12 bytes;
    8 when the params are already fp32)."""
    p_and_g = 4 if bf16 else 8
    states = 12 if bf16 else 8
    return (p_and_g * n_params / world + states * n_params / world) / 2**30


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="small")
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--micro-batch", type=int, default=4, help="sequences per rank; (b) runs --ranks x this")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--fp32", action="store_true", help="train in fp32 instead of bf16")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where (b) and (c) run")
    p.add_argument("--ranks", type=int, default=2, help="ranks of (c) (one per GPU with --device cuda)")
    p.add_argument("--attention", default="sdpa", help="model.attention: sdpa, flash, auto or favor")
    p.add_argument("--peak-tflops", type=float,
                   help="per-device peak for MFU (a GPU's dense bf16 datasheet figure) instead of measuring (a)")
    p.add_argument("--worker-out", help=argparse.SUPPRESS)
    p.add_argument("--local_rank", type=int, help=argparse.SUPPRESS)
    return p


def main() -> None:
    args = parser().parse_args()
    if args.worker_out:
        koda_worker(args)
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_train: --device cuda, but no CUDA device is available")
    os.environ["DS_ACCELERATOR"] = args.device
    configure_accelerator()
    dtype = torch.float32 if args.fp32 or not supports_bf16() else torch.bfloat16
    cfg = model_config(args)
    n_params = sum(t.numel() for t in KodaForCausalLM(cfg).parameters())
    flops_per_token = train_flops_per_token(cfg, args.seq_len)
    print(f"model {args.model}: {n_params / 1e6:.1f}M parameters, {flops_per_token / 1e6:.1f} MFLOP/token "
          f"(train), seq {args.seq_len}, global batch {args.ranks * args.micro_batch} sequences, {dtype}, "
          f"{os.cpu_count()} cores" + (f", {torch.cuda.get_device_name()}" if args.device == "cuda" else ""))
    if args.peak_tflops:
        peak = args.peak_tflops * 1e12
        print(f"(a) peak per device, as given (--peak-tflops): {peak / 1e12:.0f} TFLOP/s")
    else:
        peak = measure_matmul_peak(dtype, args.device, 2048 if args.device == "cpu" else 8192, 2.0)
        print(f"(a) matmul peak ({dtype}, {args.device}): {peak / 1e9:,.0f} GFLOP/s")
    # On CPU every rank shares the cores (a) was measured on; on GPU each rank has its own device.
    koda_peak = peak * (args.ranks if args.device == "cuda" else 1)
    # The baseline is the faster of the two plain mixed-precision choices: on CPUs without AMX,
    # autocast's per-op casts can cost more than bf16 saves.
    # The machine's speed drifts (shared hosts, frequency): the plain loops run before and after
    # (c), and the baseline is their mean.
    variants = {"fp32": False, **({"bf16 autocast": True} if dtype == torch.bfloat16 else {})}
    before = {name: plain_pytorch(args, autocast=flag) for name, flag in variants.items()}
    koda = run_koda(args)
    after = {name: plain_pytorch(args, autocast=flag) for name, flag in variants.items()}
    plains = {name: {k: (before[name][k] + after[name][k]) / 2 for k in before[name]} for name in variants}
    for name in variants:
        print(f"    plain {name}: {before[name]['tokens_per_s']:,.0f} tokens/s before (c), "
              f"{after[name]['tokens_per_s']:,.0f} after")
    best = max(plains, key=lambda k: plains[k]["tokens_per_s"])
    rows = [(f"(b) plain PyTorch, 1 process, {k}", r, peak) for k, r in plains.items()]
    rows.append((f"(c) KODA ZeRO-3 + AutoEP, {args.ranks} ranks, {'bf16' if koda['bf16'] else 'fp32'}", koda,
                 koda_peak))
    for label, r, r_peak in rows:
        mfu = r["tokens_per_s"] * flops_per_token / r_peak
        print(f"{label:<46} {r['tokens_per_s']:9,.0f} tokens/s  step {r['step_s']:.3f}s  MFU {mfu:6.1%}")
    print(f"ratio (c)/(b) against the faster plain loop ({best}): "
          f"{koda['tokens_per_s'] / plains[best]['tokens_per_s']:.2f}")
    est = zero3_estimate_gb(n_params, koda["world"], koda["bf16"])
    print(f"peak memory per rank above the process baseline: "
          f"{', '.join(f'{g:.3f} GB' for g in koda['peak_rss_delta_gb'])}; ZeRO-3 estimate of model states "
          f"(params+grads)/W + optimizer/K: {est:.3f} GB (activations and buffers come on top)")
    if koda.get("gpu_peak_gb") is not None:
        print(f"peak GPU memory allocated on rank 0: {koda['gpu_peak_gb']:.2f} GB")
    print("profile of one (c) step on rank 0, self CPU seconds by kind:")
    for kind, sec in sorted(koda["profile"]["by_kind_s"].items(), key=lambda kv: -kv[1]):
        print(f"  {kind:<14} {sec:7.3f}")
    print("  top operators: " + "; ".join(f"{n} {s}s" for n, s in koda["profile"]["top_ops"]))


if __name__ == "__main__":
    main()
