"""Decoding speed of the strategies on one model, measured against each other in one process.

Absolute tokens/s on a shared or throttled machine drift by tens of percent from one
second to the next, so the figures that mean something are ratios between modes measured
side by side: every repeat runs each mode once, in turn, and a ratio is computed per repeat
and then summarised (median and range), so a slow spell tends to slow both sides of a
ratio. Each run is timed twice: wall-clock, and the process's CPU time, which leaves out
the time other processes held the cores (with one intra-op thread it is the work done; with
several, idle threads spinning at barriers count too). On a shared machine, read the CPU
figures with one thread.

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
    wall: list[float]             # seconds, one per repeat
    cpu: list[float]              # process CPU seconds, one per repeat
    tokens: int                   # generated per repeat

    def summary(self) -> dict:
        def rates(times):
            r = sorted(self.tokens / s for s in times)
            return {"median": statistics.median(r), "min": r[0], "max": r[-1],
                    "spread_pct": 100 * (r[-1] - r[0]) / statistics.median(r)}
        return {"wall_tokens_per_s": rates(self.wall), "cpu_tokens_per_s": rates(self.cpu)}


def random_prompts(vocab: int, count: int, lengths: tuple[int, int], seed: int = 0) -> list[list[int]]:
    """`count` prompts of random ids (avoiding the special ids 0-3), lengths spread over [lo, hi]."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = lengths
    sizes = [lo + (hi - lo) * i // max(1, count - 1) for i in range(count)]
    return [torch.randint(4, vocab, (n,), generator=g).tolist() for n in sizes]


def _time(model: KodaForCausalLM, prompts: list[list[int]], cfg: GenerationConfig,
          batch: int) -> tuple[float, float, int]:
    """-> (wall seconds, CPU seconds, tokens generated)."""
    wall, cpu = time.perf_counter(), time.process_time()
    tokens = 0
    for i in range(0, len(prompts), batch):
        outs = generate(model, prompts[i:i + batch], cfg, eos_id=None)
        tokens += sum(len(o.token_ids) for o in outs)
    return time.perf_counter() - wall, time.process_time() - cpu, tokens


def run(model: KodaForCausalLM, prompts: list[list[int]], new_tokens: int, modes: dict[str, GenerationConfig],
        repeats: int = 5, warmup: int = 1, batch: int | None = None) -> dict[str, ModeResult]:
    """Time each mode `repeats` times (after `warmup` untimed rounds), interleaved round-robin.

    batch: prompts per generate call (default all of them in one batch).
    """
    batch = batch or len(prompts)
    modes = {name: cfg.replace(max_new_tokens=new_tokens) for name, cfg in modes.items()}
    results = {name: ModeResult(name, [], [], 0) for name in modes}
    for round_ in range(warmup + repeats):
        for name, cfg in modes.items():
            wall, cpu, tokens = _time(model, prompts, cfg, batch)
            if round_ >= warmup:
                results[name].wall.append(wall)
                results[name].cpu.append(cpu)
                results[name].tokens = tokens
    return results


def ratios(results: dict[str, ModeResult], clock: str = "cpu", baseline: str = BASELINE) -> dict[str, dict]:
    """Cost of each mode relative to `baseline` (time per token, > 1 = slower), paired per
    repeat, on the "cpu" or "wall" clock -> {mode: {"median", "min", "max"}}."""
    base = results[baseline]
    out = {}
    for name, res in results.items():
        pairs = zip(getattr(res, clock), getattr(base, clock), strict=True)
        per_repeat = sorted((s / res.tokens) / (b / base.tokens) for s, b in pairs)
        out[name] = {"median": statistics.median(per_repeat), "min": per_repeat[0], "max": per_repeat[-1]}
    return out


@torch.inference_mode()
def forward_floor(model: KodaForCausalLM, batch: int, k: int, context: int, repeats: int = 200) -> float:
    """Cost of one decode forward over k candidate tokens per row relative to one over a
    single token, at `context` cached tokens: the least contrastive search can cost relative
    to greedy, before any of its own bookkeeping. Timed in CPU time with one thread, on the
    wall clock with more (spinning threads would count as CPU time)."""
    from koda.infer.context import candidate_mask

    cache = model.new_cache(batch, context + k)
    model.hidden_states(torch.randint(4, model.cfg.vocab_size, (batch, context)), cache=cache)
    one = torch.randint(4, model.cfg.vocab_size, (batch, 1))
    many = torch.randint(4, model.cfg.vocab_size, (batch, k))
    mask = candidate_mask(torch.ones(batch, context, dtype=torch.bool), k)
    position = torch.full((batch, k), context)
    clock = time.process_time if torch.get_num_threads() == 1 else time.perf_counter
    times = {1: [], k: []}
    for _ in range(repeats):
        for width in (1, k):
            cache.length = context
            start = clock()
            if width == 1:
                model.hidden_states(one, cache=cache)
            else:
                model.hidden_states(many, mask, cache, position)
            times[width].append(clock() - start)
    return statistics.median(times[k]) / statistics.median(times[1])


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
