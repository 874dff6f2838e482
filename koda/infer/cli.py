"""``koda generate``: sample code from a standalone model or a training run.

    koda generate --model out/smoke --prompt 'def fib(n):\\n' --strategy contrastive
    koda generate --model runs/smoke --prompts-file problems.jsonl --strategy sample \\
        --temperature 0.8 --top-p 0.95 --seed 7 --verify tests.py --json

A prompts file is JSON lines: {"prompt": "...", "id": optional, "tests": optional tests
source used by --verify for that prompt instead of the --verify file}.
Generation stops at the end of the function (a new top-level def/class/decorator, a main
guard, top-level print/assert) unless --stop gives other strings (--stop with no string:
no stop strings). Deterministic mode is on unless --nondeterministic (docs/inference.md).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from koda.errors import KodaError
from koda.infer.complete import complete
from koda.infer.config import CONTRASTIVE_SCORES, STRATEGIES, GenerationConfig
from koda.infer.determinism import enable_determinism
from koda.infer.loading import DTYPES, load_model
from koda.infer.stops import CODE_STOPS
from koda.jsonl import read_objects


def _parser() -> argparse.ArgumentParser:
    d = GenerationConfig()
    p = argparse.ArgumentParser(prog="koda generate", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 2)[2])
    p.add_argument("--model", required=True, help="standalone model directory or run directory")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="one prompt (\\n and \\t escapes are read as newline and tab)")
    src.add_argument("--prompts-file", help="JSON lines with a 'prompt' field each")
    p.add_argument("--tag", help="checkpoint tag when --model is a run directory (default: latest)")
    p.add_argument("--tokenizer", help="tokenizer model (default: the one beside the weights)")
    p.add_argument("--strategy", choices=STRATEGIES, default=d.strategy)
    p.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens)
    p.add_argument("--temperature", type=float, default=d.temperature, help="sampling")
    p.add_argument("--top-k", type=int, default=d.top_k, help="sampling: keep the k most likely tokens (0 = all)")
    p.add_argument("--top-p", type=float, default=d.top_p, help="sampling: nucleus mass (1 = all)")
    p.add_argument("--seed", type=int, default=d.seed, help="sampling seed (one generator per prompt)")
    p.add_argument("--alpha", type=float, default=d.alpha, help="contrastive: degeneration penalty weight")
    p.add_argument("--k", type=int, default=d.candidates, help="contrastive: candidates per step")
    p.add_argument("--score", choices=CONTRASTIVE_SCORES, default=d.score,
                   help="contrastive: confidence term log p (default) or p (the paper's)")
    p.add_argument("--stop", nargs="*", help="stop strings (escapes allowed); default: end of function")
    p.add_argument("--no-cache", action="store_true", help="recompute the context every step (slow; for checks)")
    p.add_argument("--dtype", choices=sorted(DTYPES), help="cast the weights (default: as stored)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N (default: cuda if present)")
    p.add_argument("--threads", type=int, help="CPU threads (default: torch's choice)")
    p.add_argument("--nondeterministic", action="store_true", help="skip deterministic mode")
    p.add_argument("--verify", nargs="?", const="", metavar="TESTS.py",
                   help="judge each sample: the sandbox runs these tests (or the prompt's own 'tests'), "
                   "and the complexity verifier reads the code")
    p.add_argument("--verify-budget", type=float, default=2.0, help="seconds of complexity measurement per sample")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def unescape(text: str) -> str:
    """Read \\n, \\t and \\\\ in a command-line string as newline, tab and backslash."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in "nt\\":
            out.append({"n": "\n", "t": "\t", "\\": "\\"}[text[i + 1]])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def read_prompts(path: str) -> list[dict]:
    """A JSON-lines prompts file -> [{"prompt": str, "id": ..., "tests": str | None}]."""
    prompts = []
    for where, row in read_objects(path, "--prompts-file"):
        if not isinstance(row.get("prompt"), str):
            raise KodaError(f"{where}: needs a string 'prompt' field")
        if row.get("tests") is not None and not isinstance(row["tests"], str):
            raise KodaError(f"{where}: 'tests' must be a string of test source")
        prompts.append({"prompt": row["prompt"], "id": row.get("id", len(prompts)), "tests": row.get("tests")})
    if not prompts:
        raise KodaError(f"--prompts-file {path}: no prompts")
    return prompts


def _device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise KodaError(f"--device {name}: no CUDA device available")
    return name


def _complexity_line(cx: dict) -> str:
    if cx.get("syntax_error"):
        return f"not parsed ({cx['syntax_error']['kind']} at line {cx['syntax_error']['line']})"
    if cx.get("error"):
        return cx["error"]
    return cx.get("bound_text") or f"undecided: {cx.get('undecided_reason')}"


def _print_human(samples: list[dict], stats: dict) -> None:
    for s in samples:
        print(f"=== {s['id']} ({s['finish_reason']}, {s['new_tokens']} tokens) ===")
        print(s["prompt"] + s["completion"])
        if s.get("verify"):
            tests, cx = s["verify"]["tests"], s["verify"]["complexity"]
            if tests is not None:
                print(f"--- tests: {tests['passed']}/{tests['total']} passed (run status {tests['status']})")
            print(f"--- complexity: {_complexity_line(cx)}")
    print(f"[{stats['new_tokens']} tokens in {stats['seconds']:.2f}s, {stats['tokens_per_s']:.1f} tokens/s]")


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    cfg = GenerationConfig(strategy=args.strategy, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                           top_k=args.top_k, top_p=args.top_p, seed=args.seed, alpha=args.alpha,
                           candidates=args.k, score=args.score, use_cache=not args.no_cache)
    prompts = read_prompts(args.prompts_file) if args.prompts_file else [
        {"prompt": unescape(args.prompt), "id": 0, "tests": None}]
    stops = CODE_STOPS if args.stop is None else tuple(unescape(s) for s in args.stop)
    if any(not s for s in stops):
        raise KodaError("--stop: empty stop string")
    tests = None
    if args.verify is not None:
        from koda.infer.verify import require_judges

        require_judges()
        if args.verify:
            try:
                tests = Path(args.verify).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as err:
                raise KodaError(f"--verify {args.verify}: cannot read "
                                f"({getattr(err, 'strerror', None) or err})") from None
    if not 0 < args.verify_budget <= 60:
        raise KodaError(f"--verify-budget {args.verify_budget} must be in (0, 60] seconds")
    if args.threads is not None and args.threads < 1:
        raise KodaError(f"--threads must be >= 1, got {args.threads}")
    determinism = None if args.nondeterministic else enable_determinism(args.threads)
    if args.nondeterministic and args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_model(args.model, args.dtype, _device(args.device), args.tag, args.tokenizer)
    tokenizer = loaded.tokenizer
    if tokenizer is None:
        raise KodaError(f"--model {args.model}: no tokenizer beside the weights; pass --tokenizer")
    if tokenizer.vocab_size != loaded.model.cfg.vocab_size:
        raise KodaError(f"tokenizer {tokenizer.path} has {tokenizer.vocab_size} tokens, the model "
                        f"{loaded.model.cfg.vocab_size}")
    start = time.perf_counter()
    results = complete(loaded.model, tokenizer, [p["prompt"] for p in prompts], cfg, stops)
    seconds = time.perf_counter() - start
    samples = [{"id": p["id"], "prompt": r.prompt, "completion": r.text, "finish_reason": r.finish_reason,
                "stop": r.stop, "new_tokens": len(r.token_ids), "token_ids": r.token_ids}
               for p, r in zip(prompts, results, strict=True)]
    if args.verify is not None:
        from koda.infer.verify import verify_programs

        verdicts = verify_programs([r.prompt + r.text for r in results],
                                   [p["tests"] if p["tests"] is not None else tests for p in prompts],
                                   budget_s=args.verify_budget)
        for sample, verdict in zip(samples, verdicts, strict=True):
            sample["verify"] = verdict
    total = sum(s["new_tokens"] for s in samples)
    stats = {"new_tokens": total, "seconds": seconds, "tokens_per_s": total / seconds if seconds else 0.0}
    if args.json:
        print(json.dumps({"model": str(args.model), "source": loaded.source, "settings": cfg.to_dict(),
                          "stops": list(stops), "determinism": determinism, "samples": samples, **stats},
                         ensure_ascii=False))
    else:
        _print_human(samples, stats)
    return 0
