"""KODA's GRPO against TRL's GRPOTrainer: same model, reward, prompts, group size and budget.

    pip install 'trl==1.16.0'            # the peer; not a KODA dependency
    python tools/bench_rl_peer.py --init-from runs/warm-start --out runs/rl-peer --budget-s 600

Both sides start from the same warm start: KODA from its checkpoint (``koda train --stage rl
--config rl_warm_start``, GRPO, 2 ranks of ZeRO-3 + AutoEP with 1 thread each), TRL from its
Hugging Face export (``koda convert --format hf-mixtral``: weights, tokenizer files,
generation config; one process with --trl-threads threads). Same per step: --prompts prompts
x --group samples, at most --max-new-tokens tokens at temperature 0.8, the train tasks in the
same order, reward = KODA's ``koda.rl.rewards.score`` total with the config's weights (TRL
calls it as a reward function, synchronously: its generation waits for the sandbox), lr 1e-4
constant after 5 warm-up steps, KL coefficient 0.02, no CE term. Each side trains for
--budget-s seconds of training steps; each is then scored greedily on the held-out split the
way ``koda eval`` scores (the end-of-text token before the prompt, the code stop strings).

Reported side by side: steps, samples/s and completion tokens/s over the training time, the
reward per step (``<out>/reward.png``) and held-out greedy pass@1. The algorithms differ in
details each side documents (TRL: DAPO token averaging by default, KODA: per-sequence means,
KL in the reward); the point is the throughput and that both learn from the same signal.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from koda.report.runs import load_run
from koda.report.variants import train_command

KODA = [sys.executable, "-m", "koda"]


def koda_side(args, out: Path) -> dict:
    run = out / "koda"
    sets = ["rl.advantage=grpo", "rl.lvw=0", "rl.lce=0", "world_size=2", f"rl.prompts_per_step={args.prompts // 2}",
            f"rl.samples_per_prompt={args.group}", f"rl.max_new_tokens={args.max_new_tokens}",
            f"train.time_budget_s={args.budget_s}", "train.log_every=1", "rl.probe_tasks=0",
            "train.eval_every=100000", f"train.seed={args.seed}"]
    if not (run / "metrics.jsonl").is_file():
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        with (out / "koda_train.log").open("w") as log:
            subprocess.run(train_command("rl_warm_start", run, sets, stage="rl", init_from=args.init_from),
                           env=env, check=True, stdout=log, stderr=subprocess.STDOUT)
    metrics = load_run(run)
    rows = metrics.by_step()
    steps = sorted(s for s in rows if "rl/reward/total" in rows[s])
    seconds = rows[steps[-1]]["perf/elapsed_s"]
    samples = args.prompts * args.group
    tokens = sum(rows[s]["rl/completion_tokens"] * samples for s in steps)
    cumulative = [rows[s]["perf/elapsed_s"] for s in steps]
    report = out / "koda_heldout.json"
    if not report.is_file():
        subprocess.run([*KODA, "eval", "--model", str(run), "--tasks", "koda:heldout", "--temperature", "0",
                        "--no-measure", "--no-wandb", "--batch", "72", "--out", str(report)], check=True,
                       stdout=subprocess.DEVNULL)
    return {"steps": len(steps), "seconds": seconds, "samples_per_s": len(steps) * samples / seconds,
            "tokens_per_s": tokens / seconds, "pass@1": json.loads(report.read_text())["pass@1"],
            "curve": list(zip(cumulative, [rows[s]["rl/reward/total"] for s in steps], strict=True)),
            "cores": "2 ranks x 1 thread"}


def trl_side(args, out: Path) -> dict:
    hf = out / "hf"
    if not hf.is_dir():
        subprocess.run([*KODA, "convert", args.init_from, "--output", str(hf), "--format", "hf-mixtral"], check=True,
                       stdout=subprocess.DEVNULL)
    result = out / "trl.json"
    if not result.is_file():
        env = {**os.environ, "OMP_NUM_THREADS": str(args.trl_threads)}
        flags = {"--init-from": args.init_from, "--out": out, "--budget-s": args.budget_s, "--prompts": args.prompts,
                 "--group": args.group, "--max-new-tokens": args.max_new_tokens, "--trl-threads": args.trl_threads,
                 "--seed": args.seed}
        subprocess.run([sys.executable, __file__, "--trl-worker", *(str(x) for kv in flags.items() for x in kv)],
                       env=env, check=True)
    return json.loads(result.read_text())


def trl_worker(args, out: Path) -> None:
    """In its own process: TRL's GRPOTrainer on the export, then greedy held-out completions."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from koda.config import run as run_config
    from koda.data.prepare import prepare
    from koda.data.tokenizer import EOS
    from koda.evaluate.score import score as score_eval
    from koda.rl.rewards import RewardSample, score
    from koda.rl.step import task_order
    from koda.sandbox import SandboxPolicy, SandboxPool
    from koda.tasks import build_tasks

    torch.manual_seed(args.seed)
    cfg = run_config.load("rl_warm_start")
    koda_tok = prepare(cfg.data, cfg.model.vocab_size, build_missing=False, log=lambda *_: None)
    hf = out / "hf"
    tok = AutoTokenizer.from_pretrained(hf)
    tasks = build_tasks(seed=cfg.rl.task_seed, train=cfg.rl.tasks_train, heldout=cfg.rl.tasks_heldout)
    train = [t for t in tasks if t.split == "train"]
    heldout = [t for t in tasks if t.split == "heldout"]
    by_id = {t.task_id: t for t in tasks}
    prefix = tok.eos_token          # koda eval's context: end-of-text, then the prompt
    for t in train[:8]:
        got = tok(prefix + t.prompt)["input_ids"]
        if got != [EOS, *koda_tok.encode(t.prompt)]:
            raise SystemExit(f"bench_rl_peer: the exported tokenizer gives other ids than KODA's for {t.task_id}")
    # KODA's step s, rank r takes train[order[((s * W + r) * P + i) % N]]: over both ranks, in order
    steps_needed = int(args.budget_s) + 1
    visit = task_order(len(train), args.seed)
    order = [train[visit[i % len(train)]] for i in range(steps_needed * args.prompts)]
    data = Dataset.from_list([{"prompt": prefix + t.prompt, "task_id": t.task_id} for t in order])
    pool = SandboxPool(workers=cfg.rl.judge_workers, policy=SandboxPolicy())

    def koda_reward(prompts, completions, task_id, **_):
        samples = [RewardSample(by_id[i].program(c), by_id[i].program(), by_id[i].tests(), by_id[i].entry_point,
                                by_id[i].target) for i, c in zip(task_id, completions, strict=True)]
        return [r.total for r in score(samples, cfg.rl.rewards, pool=pool, budget_s=cfg.rl.judge_budget_s)]

    log: list[dict] = []

    class Budget(TrainerCallback):
        """Stops after budget_s seconds of training steps; keeps each step's logs with its time."""

        def on_train_begin(self, *a, **k):
            self.start = time.perf_counter()

        def on_log(self, _args, state, control, logs=None, **k):
            log.append({**(logs or {}), "seconds": time.perf_counter() - self.start, "step": state.global_step})

        def on_step_end(self, _args, state, control, **k):
            if time.perf_counter() - self.start >= args.budget_s:
                control.should_training_stop = True

    model = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32)
    config = GRPOConfig(output_dir=str(out / "trl"), per_device_train_batch_size=args.prompts * args.group,
                        num_generations=args.group, max_completion_length=args.max_new_tokens, temperature=0.8,
                        learning_rate=1e-4, lr_scheduler_type="constant_with_warmup", warmup_steps=5, beta=0.02,
                        max_steps=steps_needed, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True,
                        bf16=True, seed=args.seed, shuffle_dataset=False, disable_tqdm=True,
                        gradient_checkpointing=False)    # KODA recomputes nothing either
    trainer = GRPOTrainer(model=model, reward_funcs=koda_reward, args=config, train_dataset=data,
                          processing_class=tok, callbacks=[Budget()])
    trainer.train()
    (out / "trl_log.json").write_text(json.dumps(log, indent=1) + "\n")
    steps = [r for r in log if "reward" in r]
    seconds = steps[-1]["seconds"]
    samples = args.prompts * args.group
    tokens = sum(r.get("completions/mean_length", r.get("completion_length", 0.0)) * samples for r in steps)
    completions = greedy(trainer.model.eval(), tok, heldout, prefix)
    report, _ = score_eval(heldout, completions, [1], measure=False)
    pool.close()
    result = {"steps": len(steps), "seconds": seconds, "samples_per_s": len(steps) * samples / seconds,
              "tokens_per_s": tokens / seconds, "pass@1": report["pass@1"],
              "curve": [(r["seconds"], r["reward"]) for r in steps], "cores": f"1 process x {args.trl_threads} threads"}
    (out / "trl.json").write_text(json.dumps(result, indent=1) + "\n")


def greedy(model, tok, tasks, prefix: str, max_new_tokens: int = 384, batch: int = 24) -> list[dict]:
    """koda eval's greedy completions, from a transformers model: cut at the code stop strings."""
    import torch

    from koda.infer.stops import CODE_STOPS, find_stop

    out = []
    tok.padding_side = "left"
    for start in range(0, len(tasks), batch):
        chunk = tasks[start:start + batch]
        enc = tok([prefix + t.prompt for t in chunk], return_tensors="pt", padding=True)
        with torch.no_grad():
            ids = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
        for t, row in zip(chunk, ids[:, enc["input_ids"].shape[1]:], strict=True):
            text = tok.decode(row, skip_special_tokens=True)
            found = find_stop(text, CODE_STOPS)
            out.append({"task_id": t.task_id, "completion": text[:found[0]] if found else text})
    return out


def plot(sides: dict[str, dict], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    for name, side in sides.items():
        xs, ys = zip(*side["curve"], strict=True)
        ax.plot(xs, ys, label=name, linewidth=0.8)
    ax.set_xlabel("training seconds")
    ax.set_ylabel("mean reward per step")
    ax.legend()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--init-from", required=True, help="the warm start (a KODA run directory)")
    p.add_argument("--out", default="runs/rl-peer")
    p.add_argument("--budget-s", type=float, default=600.0, help="seconds of training steps per side")
    p.add_argument("--prompts", type=int, default=8, help="prompts per step (KODA: half per rank)")
    p.add_argument("--group", type=int, default=4, help="samples per prompt")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--trl-threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--trl-worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.trl_worker:
        trl_worker(args, out)
        return 0
    sides = {"KODA": koda_side(args, out), "TRL": trl_side(args, out)}
    print("\n| side | cores | steps | train s | samples/s | completion tokens/s | held-out greedy pass@1 |")
    print("|---|---|---|---|---|---|---|")
    for name, s in sides.items():
        print(f"| {name} | {s['cores']} | {s['steps']} | {s['seconds']:.0f} | {s['samples_per_s']:.2f} | "
              f"{s['tokens_per_s']:.0f} | {s['pass@1']:.3f} |")
    k, t = sides["KODA"], sides["TRL"]
    print(f"\nKODA / TRL: samples/s {k['samples_per_s'] / t['samples_per_s']:.2f}x, "
          f"tokens/s {k['tokens_per_s'] / t['tokens_per_s']:.2f}x")
    plot(sides, out / "reward.png")
    print(f"reward curves: {out / 'reward.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
