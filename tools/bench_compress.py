#!/usr/bin/env python
"""Model size vs validation perplexity under Tucker compression of the expert tensors.

For a converted model of a training run, in one process: the uncompressed model (the
baseline), the full-rank decomposition, and one ``koda compress --ratio R`` per ratio are
each evaluated on the run's validation windows, the same ones its trainer evaluated (the
run's eval_batches x world_size micro-batches of its micro-batch size, read with
``koda.data.loader.eval_batches``), so the baseline's perplexity should match the run's
last logged val/ppl up to the bf16-vs-fp32 difference. Printed per row: the ranks, bytes
of the expert tensors and of the whole model as stored compressed (core + factors), their
ratio to the baseline, the mean relative reconstruction error, validation loss and
perplexity and its ratio to the baseline, and seconds to compress.

    koda convert /work/exp/pretrain --output /tmp/pretrain-model
    python tools/bench_compress.py --model /tmp/pretrain-model --run /work/exp/pretrain \\
        --shards-dir /work/main/cache/shards/stdlib-4096
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from koda.checkpoint import load_standalone, read_config
from koda.checkpoint.compress import compress_model_dir
from koda.data.loader import BatchLayout, TokenStream, eval_batches
from koda.data.shards import open_split


def validation(run: Path, shards_dir: str | None) -> list[torch.Tensor]:
    """The run's validation micro-batches, [micro_batch, seq_len + 1] each."""
    cfg = json.loads((run / "config.json").read_text())
    micro = json.loads((run / "ds_config.json").read_text())["train_micro_batch_size_per_gpu"]
    layout = BatchLayout(cfg["data"]["seq_len"], micro, 1, 0, 1)
    stream = TokenStream(open_split(Path(shards_dir or cfg["data"]["shards_dir"]), "val"))
    return eval_batches(stream, layout, cfg["train"]["eval_batches"] * cfg["world_size"])


@torch.no_grad()
def val_loss(model_dir: Path, batches: list[torch.Tensor]) -> float:
    model = load_standalone(model_dir, dtype=torch.float32)
    total = 0.0
    for batch in batches:
        logits = model(batch[:, :-1])
        total += F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten()).item()
    return total / len(batches)          # every batch holds the same number of targets


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, type=Path, help="a koda convert output directory")
    p.add_argument("--run", required=True, type=Path, help="the training run it came from (config, ds_config)")
    p.add_argument("--shards-dir", help="the run's shards, when its data.shards_dir is relative to elsewhere")
    p.add_argument("--ratios", default="1.0,0.5,0.25,0.1")
    p.add_argument("--iterations", type=int, default=20, help="HOOI sweeps (koda compress --iterations)")
    p.add_argument("--max-batches", type=int, help="evaluate only the first N validation micro-batches")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core machine)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    load_before = os.getloadavg()
    batches = validation(args.run, args.shards_dir)[:args.max_batches]
    info = read_config(args.model)
    m = info.model
    full = {"gate_up_proj": (m.n_experts, 2 * m.ffn_hidden, m.d_model),
            "down_proj": (m.n_experts, m.d_model, m.ffn_hidden)}
    print(f"model {args.model} (d_model {m.d_model}, {m.n_layers} layers, {m.n_experts} experts, F {m.ffn_hidden}, "
          f"{info.dtype}); validation: {len(batches)} x {list(batches[0].shape)} windows of {args.run}")
    print(f"machine: {os.cpu_count()}-core CPU, torch threads {torch.get_num_threads()}, "
          f"load average at start {load_before[0]:.2f}")

    base_loss = val_loss(args.model, batches)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-compress-") as tmp:
        variants = [("full rank", {"ranks": full})] + [(f"ratio {r}", {"ratio": float(r)})
                                                      for r in args.ratios.split(",")]
        for i, (label, choice) in enumerate(variants):
            start = time.perf_counter()
            out = Path(tmp) / f"v{i}"
            summary = compress_model_dir(args.model, out, iterations=args.iterations, log=lambda *_: None, **choice)
            seconds = time.perf_counter() - start
            loss = val_loss(out, batches)
            ranks = {t.name.rsplit(".", 1)[1]: "x".join(map(str, t.ranks)) for t in summary.tensors}
            errors = [t.relative_error for t in summary.tensors]
            rows.append((label, f"{ranks['gate_up_proj']} / {ranks['down_proj']}", summary.compressed_expert_bytes,
                         summary.compressed_model_bytes, sum(errors) / len(errors), loss, seconds, summary))
            print(f"  {label}: {seconds:.1f} s", flush=True)
    base = rows[0][7]
    print(f"\nbaseline (uncompressed): experts {base.expert_bytes:,} B, model {base.model_bytes:,} B, "
          f"val loss {base_loss:.4f}, ppl {math.exp(base_loss):.2f}")
    print(f"{'variant':<11} {'ranks gate_up / down':>26} {'expert B':>11} {'model B':>11} {'size':>6} "
          f"{'rel.err':>8} {'val loss':>9} {'ppl':>8} {'ppl x':>6} {'s':>5}")
    print(f"{'baseline':<11} {'-':>26} {base.expert_bytes:>11,} {base.model_bytes:>11,} {1:>6.3f} {0:>8.3f} "
          f"{base_loss:>9.4f} {math.exp(base_loss):>8.2f} {1:>6.3f} {0:>5.1f}")
    for label, ranks, expert_b, model_b, err, loss, seconds, _ in rows:
        print(f"{label:<11} {ranks:>26} {expert_b:>11,} {model_b:>11,} {model_b / base.model_bytes:>6.3f} "
              f"{err:>8.3f} {loss:>9.4f} {math.exp(loss):>8.2f} {math.exp(loss - base_loss):>6.3f} {seconds:>5.1f}")
    print(f"load average at end {os.getloadavg()[0]:.2f} (other jobs on the machine raise it above 0)")


if __name__ == "__main__":
    main()
