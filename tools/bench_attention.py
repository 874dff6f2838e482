#!/usr/bin/env python
"""FAVOR+ against softmax attention: accuracy on a trained model's real activations, and
time / peak memory against sequence length, each measured against SDPA in the same run.

    python tools/bench_attention.py --model /work/exp/pretrain --shards cache/shards/stdlib-4096
    python tools/bench_attention.py --skip-accuracy --lengths 512 2048 8192
    python tools/bench_attention.py --skip-speed --features 16 64 256 1024

(1) Accuracy: a forward of the model on validation tokens, with a hook on each layer's
attention kernel capturing q, k (after RoPE) and v; FAVOR+ with m features is compared with
exact causal softmax attention on those same tensors (cosine similarity of the per-token
head outputs, averaged over tokens, heads and --seeds feature draws), and the model's
validation loss with every layer switched to FAVOR+ is compared with its own (SDPA) loss.
(2) Speed: one attention call of the model's head shapes (batch 1), forward only, each
(backend, length) in a fresh process so its peak RSS increase is its own; lengths stop at
the first one where SDPA took longer than --budget seconds.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from koda.data.shards import open_split
from koda.infer.loading import load_model
from koda.model import KodaForCausalLM
from koda.model.config import preset
from koda.model.favor import FavorCore
from koda.objectives import next_token_loss

CRITERION = 0.95


def machine() -> str:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{platform.machine()} {os.cpu_count()}-core CPU, torch {torch.__version__}, load average {load}"


def val_tokens(shards: Path, vocab: int, rows: int, length: int) -> torch.Tensor:
    """[rows, length + 1] contiguous windows from the start of the validation split."""
    tokens = np.concatenate([np.asarray(s.tokens) for s in open_split(shards, "val", vocab_size=vocab)])
    need = rows * (length + 1)
    if len(tokens) < need:
        raise SystemExit(f"{shards}: {len(tokens)} validation tokens, need {need}")
    return torch.from_numpy(tokens[:need].astype(np.int64)).view(rows, length + 1)


def capture_qkv(model: KodaForCausalLM, ids: torch.Tensor) -> list[tuple]:
    """Per layer (q [B, H, S, d], k [B, Hkv, S, d], v [B, Hkv, S, d]) as the kernel receives them."""
    captured, hooks = [], []
    for layer in model.model.layers:
        hooks.append(layer.self_attn.core.register_forward_hook(
            lambda module, args, out: captured.append(tuple(a.detach() for a in args[:3]))))
    with torch.no_grad():
        model(ids)
    for hook in hooks:
        hook.remove()
    return captured


def token_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over (batch, head, token) of the cosine similarity of [d] output vectors."""
    return F.cosine_similarity(a, b, dim=-1).mean().item()


def accuracy(args) -> None:
    loaded = load_model(args.model, dtype="fp32")
    model, cfg = loaded.model, loaded.model.cfg
    shards = Path(args.shards) if args.shards else Path(json.loads((Path(args.model) / "config.json").read_text())
                                                         ["data"]["shards_dir"])
    batch = val_tokens(shards, cfg.vocab_size, args.rows, args.seq)
    ids, targets = batch[:, :-1], batch[:, 1:]
    qkv = capture_qkv(model, ids)
    exact = [F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=k.shape[1] != q.shape[1])
             for q, k, v in qkv]
    with torch.no_grad():
        base_loss = next_token_loss(model(ids), targets).item()
    norms = [(q.norm(dim=-1).mean().item(), k.norm(dim=-1).mean().item()) for q, k, _ in qkv]
    print(f"\n## Accuracy: {args.model}, {args.rows} x {args.seq} validation tokens, {machine()}")
    print("mean |q|, |k| per layer (after RoPE): " + ", ".join(f"{q:.1f}/{k:.1f}" for q, k in norms))
    print(f"SDPA validation loss {base_loss:.4f}; criterion: cosine > {CRITERION}")
    print("| features m | cosine per layer | mean cosine | > criterion | FAVOR+ val loss | loss / SDPA |")
    print("|---:|---|---:|:---:|---:|---:|")
    for m in args.features:
        per_layer = []
        for i, ((q, k, v), ref) in enumerate(zip(qkv, exact, strict=True)):
            sims = [token_cosine(FavorCore(cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, m, 0, seed, i)(q, k, v), ref)
                    for seed in range(args.seeds)]
            per_layer.append(sum(sims) / len(sims))
        with torch.device("meta"):
            favor = KodaForCausalLM(cfg.replace(attention="favor", favor_features=m))
        favor.load_state_dict(model.state_dict(), assign=True)
        with torch.no_grad():
            loss = next_token_loss(favor.eval()(ids), targets).item()
        mean = sum(per_layer) / len(per_layer)
        print(f"| {m} | {', '.join(f'{c:.3f}' for c in per_layer)} | {mean:.3f} | "
              f"{'yes' if mean > CRITERION else 'no'} | {loss:.4f} | {loss / base_loss:.3f} |", flush=True)


def one(backend: str, length: int, heads: int, kv_heads: int, head_dim: int, features: int, threads: int) -> dict:
    """Child process: one forward call; seconds (best of 2 after a warm-up when short) and peak RSS growth."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    q = torch.randn(1, heads, length, head_dim) * 0.5
    k, v = torch.randn(1, kv_heads, length, head_dim) * 0.5, torch.randn(1, kv_heads, length, head_dim)
    core = FavorCore(heads, kv_heads, head_dim, features, 0, 0, 0)
    core.weights(q.device)

    def call():
        with torch.no_grad():
            if backend == "sdpa":
                return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=kv_heads != heads)
            return core(q, k, v)

    # ru_maxrss is dominated by importing torch; poll the RSS during the call instead
    page, samples, done = resource.getpagesize(), [], threading.Event()

    def poll():
        while not done.is_set():
            with open("/proc/self/statm") as statm:
                samples.append(int(statm.read().split()[1]) * page)
            time.sleep(0.0005)

    with open("/proc/self/statm") as statm:
        before = int(statm.read().split()[1]) * page
    poller = threading.Thread(target=poll)
    poller.start()
    start = time.perf_counter()
    call()
    first = time.perf_counter() - start
    done.set()
    poller.join()
    peak = (max(samples, default=before) - before) / 2**20
    times = [first]
    if first < 2.0:
        for _ in range(2):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
    return {"seconds": min(times[1:] or times), "peak_mib": peak}


def speed(args, heads: int, kv_heads: int, head_dim: int) -> None:
    print(f"\n## Time and peak memory: one causal attention forward, batch 1, {heads} heads "
          f"({kv_heads} kv), head_dim {head_dim}, FAVOR+ m={args.speed_features}, {args.threads} thread(s); "
          f"peak = RSS growth during the call, polled; {machine()}")
    print("| length | SDPA s | FAVOR+ s | FAVOR+/SDPA time | SDPA peak MiB | FAVOR+ peak MiB |")
    print("|---:|---:|---:|---:|---:|---:|")
    stopped = None
    for length in args.lengths:
        row = {}
        for backend in ("sdpa", "favor"):
            out = subprocess.run([sys.executable, __file__, "--one", backend, str(length), str(heads), str(kv_heads),
                                  str(head_dim), str(args.speed_features), str(args.threads)],
                                 capture_output=True, text=True, check=True)
            row[backend] = json.loads(out.stdout.strip().splitlines()[-1])
        s, f = row["sdpa"], row["favor"]
        print(f"| {length} | {s['seconds']:.4f} | {f['seconds']:.4f} | {f['seconds'] / s['seconds']:.2f} | "
              f"{s['peak_mib']:.0f} | {f['peak_mib']:.0f} |", flush=True)
        if s["seconds"] > args.budget:
            stopped = length
            break
    if stopped is not None and stopped != args.lengths[-1]:
        print(f"stopped after length {stopped}: SDPA took over --budget {args.budget} s")
    print(f"(finished; {machine()})")


def main(argv: list[str]) -> int:
    if argv[:1] == ["--one"]:
        backend, *sizes = argv[1:]
        print(json.dumps(one(backend, *map(int, sizes))))
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="/work/exp/pretrain", help="trained run or standalone model directory")
    p.add_argument("--shards", help="directory with val_*.idx shards (default: the run config's data.shards_dir)")
    p.add_argument("--rows", type=int, default=4)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--seeds", type=int, default=2, help="feature draws averaged per point")
    p.add_argument("--features", type=int, nargs="+", default=[16, 32, 64, 128, 256, 512])
    p.add_argument("--lengths", type=int, nargs="+", default=[512, 1024, 2048, 4096, 8192, 16384])
    p.add_argument("--speed-features", type=int, default=256)
    p.add_argument("--budget", type=float, default=30.0, help="stop lengths after SDPA exceeds this many seconds")
    p.add_argument("--threads", type=int, default=1, help="torch threads for the speed part (1: steadiest "
                   "on a shared machine; 2 threads spin against other jobs)")
    p.add_argument("--skip-accuracy", action="store_true")
    p.add_argument("--skip-speed", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    smoke = preset("smoke")
    if not args.skip_accuracy:
        accuracy(args)
    if not args.skip_speed:
        speed(args, smoke.n_heads, smoke.n_kv_heads, smoke.head_dim)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
