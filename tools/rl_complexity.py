"""Does the complexity reward move a policy toward the efficient program?

    python tools/rl_complexity.py --init-from runs/warm-start --out runs/rl-complexity --budget-s 600
    python tools/rl_complexity.py --init-from runs/warm-start --prime-s 300 --out runs/rl-complexity3

From the warm start, GRPO on ``koda.tasks.open_method``'s families alone (``power_open``,
``recurrence_open``: the docstring leaves the method open, the naive and the efficient program
both pass the tests, the target is the efficient bound), two arms trained side by side with
the same seed, prompts and budget:
  complexity  rewards: tests 1, complexity 0.5, syntax 0.5
  control     the same with complexity 0
Neither has the CE term or the structural rewards (similarity, spectral, Poincaré): both
pull toward the reference, which is the efficient program, and would blur what the
complexity reward does alone. ``--prime-s S`` first fine-tunes the warm start for S seconds
(CE, ``--init-from``) on the families' train tasks answered both ways (``koda tasks export
--documents --both-ways``: the reference and the naive program after the same prompt), so the
arms start from a policy that samples both programs and calls the function by its own name;
the arms then start from that run. Before and after, ``koda eval`` on the families' held-out tasks
(8 per family), 8 samples each at temperature 0.8, growth measured: per family, the passing
samples and the share of them that meet the target.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from koda.report.variants import run_jobs, train_command

FAMILIES = "power_open,recurrence_open"
HELDOUT = 8
ARMS = {"complexity": "rl.rewards.complexity=0.5", "control": "rl.rewards.complexity=0"}
COMMON = [f"rl.task_families=[{FAMILIES}]", f"rl.tasks_heldout={HELDOUT}", "rl.lce=0", "rl.rewards.similarity=0",
          "rl.rewards.spectral=0", "rl.rewards.poincare=0", f"rl.probe_tasks={2 * HELDOUT}", "train.eval_every=25"]


def eval_job(model: str | Path, name: str, out: Path, seed: int) -> tuple[str, list[str], Path]:
    cmd = [sys.executable, "-m", "koda", "eval", "--model", str(model), "--tasks", "koda:heldout", "--families",
           FAMILIES, "--heldout", str(HELDOUT), "--n", "8", "--temperature", "0.8", "--k", "1,8", "--seed", str(seed),
           "--batch", "64", "--no-wandb", "--out", str(out / f"{name}.json"),
           "--write-samples", str(out / f"{name}.jsonl.tmp")]
    return name, cmd, out / "logs" / f"eval_{name}.log"


def table(out: Path, names: list[str]) -> None:
    """Per family and model: passing samples, and how many of those meet the target."""
    counts: dict[str, dict[str, list[int]]] = {}
    for name in names:
        for line in (out / f"{name}.jsonl").read_text().splitlines():
            r = json.loads(line)
            c = counts.setdefault(r["family"], {}).setdefault(name, [0, 0, 0])
            c[0] += 1
            c[1] += bool(r["passed"])
            c[2] += bool(r["passed"] and r["complexity_met"])
    print("\nPer family: samples passing / all, and meeting the target among the passing:\n")
    print("| family | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for family, by in sorted(counts.items()):
        cells = [f"{by[n][1]}/{by[n][0]} pass, {by[n][2]}/{by[n][1]} met"
                 + (f" ({by[n][2] / by[n][1]:.2f})" if by[n][1] else "") for n in names]
        print(f"| {family} | " + " | ".join(cells) + " |")


def prime(init_from: str, out: Path, budget_s: float, seed: int, threads: int) -> Path:
    """CE fine-tuning of `init_from` on the families' train tasks answered both ways; returns the run."""
    run = out / "prime"
    if (run / "checkpoints" / "latest").exists():
        return run
    docs = out / "prime_docs.jsonl"
    if not docs.is_file():
        subprocess.run([sys.executable, "-m", "koda", "tasks", "export", "--seed", "0", "--heldout", str(HELDOUT),
                        "--train", "2000", "--train-up-to", "--families", FAMILIES, "--split", "train", "--documents",
                        "--both-ways", "--out", str(docs) + ".tmp"], check=True)
        Path(str(docs) + ".tmp").rename(docs)
    sets = [f"data.sources=[{docs}]", f"data.shards_dir={out / 'prime_shards'}",
            "ds_config=zero3_ep_rl_warm_start.json",
            f"train.seed={seed}", f"train.time_budget_s={budget_s}", "train.steps=100000", "train.eval_every=100000",
            "train.checkpoint_every=100000", "train.log_every=25"]
    run_jobs([("prime (train)", train_command("warm_start", run, sets, init_from=init_from),
               out / "logs" / "prime.log")], 1, threads)
    return run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--init-from", required=True, help="the warm start both arms start from")
    p.add_argument("--out", default="runs/rl-complexity")
    p.add_argument("--config", default="rl_warm_start")
    p.add_argument("--budget-s", type=float, default=600.0, help="seconds of training steps per arm")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="torch threads per arm")
    p.add_argument("--set", action="append", default=[], help="an override for both arms")
    p.add_argument("--prime-s", type=float, default=0.0,
                   help="seconds of CE fine-tuning on both-ways documents before the arms (0: none)")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.prime_s > 0:
        args.init_from = prime(args.init_from, out, args.prime_s, args.seed, args.threads)
    names = ["start", *ARMS]
    jobs = []
    for arm, override in ARMS.items():
        run = out / arm
        if not (run / "checkpoints" / "latest").exists():
            sets = [f"train.seed={args.seed}", f"train.time_budget_s={args.budget_s}", *COMMON, override, *args.set]
            jobs.append((arm + " (train)", train_command(args.config, run, sets, stage="rl", init_from=args.init_from),
                         out / "logs" / f"{arm}.log"))
    if not (out / "start.jsonl").is_file():
        jobs.append(eval_job(args.init_from, "start", out, args.seed))
    done = lambda name: (out / f"{name}.jsonl.tmp").rename(out / f"{name}.jsonl") if "(" not in name else None
    run_jobs(jobs, len(jobs), args.threads, on_success=done)
    run_jobs([eval_job(out / arm, arm, out, args.seed) for arm in ARMS if not (out / f"{arm}.jsonl").is_file()],
             len(ARMS), args.threads, on_success=done)
    table(out, names)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
