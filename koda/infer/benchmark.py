"""Decoding speed of the strategies on one model, measured against each other in one process.

Absolute tokens/s on a shared or throttled machine drift by tens of percent from one
minute to the next, so the figures that mean something are ratios between modes measured
side by side: every repeat runs each mode once, in turn, and a ratio is computed per repeat
and then summarised (median and spread), so a slow spell slows both sides of a ratio.

Every mode generates exactly ``new_tokens`` per prompt (no end-of-sequence, no stop
strings), so tokens/s compare like with like.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch

from koda.infer.config import GenerationConfig
from koda.infer.generate import generate
from koda.model.transformer import KodaForCausalLM

BASELINE = "greedy"


def default_modes(k: int = 4, alpha: float = 0.6) -> dict[str, GenerationConfig]:
    return {
        "greedy": GenerationConfig(strategy="greedy"),
        "greedy_no_cache": GenerationConfig(strategy="greedy", use_cache=False),
        "sample": GenerationConfig(strategy="sample", top_p=0.95, top_k=50),
        "contrastive": GenerationConfig(strategy="contrastive", candidates=k, alpha=alpha),
    }


@dataclass
class ModeResult:
    name: str
    seconds: list[float]          # one per repeat
    tokens: int                   # generated per repeat

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / statistics.median(self.seconds)

    def summary(self) -> dict:
        rates = sorted(self.tokens / s for s in self.seconds)
        return {"tokens_per_s": self.tokens_per_s, "min": rates[0], "max": rates[-1],
                "spread_pct": 100 * (rates[-1] - rates[0]) / statistics.median(rates)}


def random_prompts(vocab: int, count: int, lengths: tuple[int, int], seed: int = 0) -> list[list[int]]:
    """`count` prompts of random ids (avoiding the special ids 0-3), lengths spread over [lo, hi]."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = lengths
    sizes = [lo + (hi - lo) * i // max(1, count - 1) for i in range(count)]
    return [torch.randint(4, vocab, (n,), generator=g).tolist() for n in sizes]


def _time(model: KodaForCausalLM, prompts: list[list[int]], cfg: GenerationConfig, batch: int) -> tuple[float, int]:
    start = time.perf_counter()
    tokens = 0
    for i in range(0, len(prompts), batch):
        outs = generate(model, prompts[i:i + batch], cfg, eos_id=None)
        tokens += sum(len(o.token_ids) for o in outs)
    return time.perf_counter() - start, tokens


def run(model: KodaForCausalLM, prompts: list[list[int]], new_tokens: int, modes: dict[str, GenerationConfig],
        repeats: int = 5, warmup: int = 1, batch: int | None = None) -> dict[str, ModeResult]:
    """Time each mode `repeats` times (after `warmup` untimed rounds), interleaved round-robin.

    batch: prompts per generate call (default all of them in one batch).
    """
    batch = batch or len(prompts)
    modes = {name: cfg.replace(max_new_tokens=new_tokens) for name, cfg in modes.items()}
    results = {name: ModeResult(name, [], 0) for name in modes}
    for round_ in range(warmup + repeats):
        for name, cfg in modes.items():
            seconds, tokens = _time(model, prompts, cfg, batch)
            if round_ >= warmup:
                results[name].seconds.append(seconds)
                results[name].tokens = tokens
    return results


def ratios(results: dict[str, ModeResult], baseline: str = BASELINE) -> dict[str, dict]:
    """Cost of each mode relative to `baseline` (time per token, > 1 = slower), per repeat."""
    base = results[baseline]
    out = {}
    for name, res in results.items():
        pairs = zip(res.seconds, base.seconds, strict=True)
        per_repeat = sorted((s / res.tokens) / (b / base.tokens) for s, b in pairs)
        out[name] = {"median": statistics.median(per_repeat), "min": per_repeat[0], "max": per_repeat[-1]}
    return out


def profile(model: KodaForCausalLM, prompts: list[list[int]], new_tokens: int, cfg: GenerationConfig,
            rows: int = 12) -> str:
    """torch.profiler's table of the ops that take the most self CPU time in one generate call."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    cfg = cfg.replace(max_new_tokens=new_tokens)
    generate(model, prompts, cfg, eos_id=None)
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        generate(model, prompts, cfg, eos_id=None)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)
