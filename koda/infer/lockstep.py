"""Decoding that keeps several processes in step: the rollout loop of the training actor.

Under ZeRO-3 / AutoEP every forward is a collective (the experts' all-to-all), so the ranks
must run the same number of forwards even when their prompts end at different lengths. A
rank that stopped early and went on to its next training forward would pair that forward's
collectives with another rank's decode step. So every step the ranks first *agree*: one
small reduction says whether any rank still has a row to extend and whether any rank
failed. While anyone is generating, a finished rank runs a dummy one-token forward (its
experts' collectives still take part); a failure on one rank ends the loop on all ranks at
the same step, as an error on each. The loop itself knows nothing of processes: ``agree``
is handed in (``koda.distributed.rollout`` passes an all-reduce; a single process passes
nothing), so it runs, and is tested, in one process as well.

The result keeps what a policy-gradient step needs: the sampled ids, the log-probability of
each under the sampling temperature, and a mask; the end-of-sequence token is part of the
completion (its probability is part of the policy) and is included.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from koda.data.tokenizer import EOS, PAD
from koda.errors import ConfigError, KodaError
from koda.infer.config import GenerationConfig
from koda.infer.context import DecodeState
from koda.infer.generate import check_prompts
from koda.infer.sampling import kept_distribution, row_generators, row_seed, sample
from koda.model.transformer import KodaForCausalLM

# agree(still_generating, failed) -> (anyone still generating, ranks that failed)
Agree = Callable[[bool, bool], tuple[bool, list[int]]]
# on_finish([(prompt index, generated ids, finish reason)]): the prompts that finished in one step
Finished = Callable[[list[tuple[int, list[int], str]]], None]


def alone(still_generating: bool, failed: bool) -> tuple[bool, list[int]]:
    """``agree`` for a single process."""
    return still_generating, [0] if failed else []


def rollout_seed(seed: int, rank: int, step: int) -> int:
    """The sampling seed of one rank in one rollout phase: ranks draw different samples, each
    phase (training step) draws new ones, and a rerun or resume at the same step repeats them."""
    return row_seed(row_seed(seed, rank), step)


@dataclass(frozen=True)
class Rollout:
    """One rank's completions, right-padded to the longest (T = its longest completion)."""
    ids: torch.Tensor        # [B, T] long: sampled tokens (EOS included), pad_id after the end
    logprobs: torch.Tensor   # [B, T] fp32: log p(token) under softmax(logits / temperature); 0 on padding
    mask: torch.Tensor       # [B, T] bool: True on the completion's tokens
    finish_reasons: list[str]  # per prompt: "eos", "stop" or "length"
    steps: int               # forwards this rank ran after the prefill (dummy ones included)

    def completion(self, row: int) -> list[int]:
        """Row `row`'s tokens without padding and without the end-of-sequence token."""
        ids = self.ids[row][self.mask[row]].tolist()
        return ids[:-1] if self.finish_reasons[row] == "eos" else ids


class _Chooser:
    """Greedy or seeded sampling, plus the log-probability of the chosen token."""

    def __init__(self, cfg: GenerationConfig, rows: int, seed: int, device: torch.device):
        self.cfg = cfg
        self.generators = row_generators(seed, rows, device) if cfg.strategy == "sample" else None

    def keep(self, rows: list[int]) -> None:
        if self.generators is not None:
            self.generators = [self.generators[r] for r in rows]

    def choose(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """logits: [B, V] fp32 -> (tokens [B] long, their log-probabilities [B] fp32)."""
        if self.generators is None:
            tokens = logits.argmax(dim=-1)
            temperature = 1.0
        else:
            cfg = self.cfg
            probs, ids = kept_distribution(logits, cfg.temperature, cfg.top_k, cfg.top_p)
            tokens = sample(probs, ids, self.generators)
            temperature = cfg.temperature
        logp = torch.log_softmax(logits.float() / temperature, dim=-1)
        return tokens, logp.gather(1, tokens[:, None]).squeeze(1)


def _fail(rank: int, failed: list[int], step: int, error: BaseException | None) -> KodaError:
    if error is not None:
        return KodaError(f"rollout failed on rank {rank} at step {step}: {error}")
    return KodaError(f"rollout stopped at step {step}: rank(s) {', '.join(map(str, failed))} failed")


@torch.no_grad()
def lockstep_generate(model: KodaForCausalLM, prompts: list[list[int]], cfg: GenerationConfig, *,
                      agree: Agree = alone, rank: int = 0, step: int = 0, eos_id: int | None = EOS,
                      pad_id: int = PAD, should_stop: Callable[[int, list[int]], bool] | None = None,
                      on_finish: Finished | None = None) -> Rollout:
    """Complete this rank's prompts (may be empty) in step with the other ranks -> Rollout.

    The decode runs under ``inference_mode`` (cheaper per op than ``no_grad``: a small
    model's decode step is all per-op overhead), but only Python lists leave it: the
    Rollout's tensors are made afterwards under ``no_grad``, as ordinary tensors that may
    meet autograd later (a training step follows), which inference tensors refuse. Sampling seeds are
    ``rollout_seed(cfg.seed, rank, step)`` then one generator per prompt. ``max_new_tokens``
    may differ between ranks; the loop lasts as long as the longest rank needs.

    ``on_finish(done)`` is called once per decode step in which prompts of this rank finished,
    with ``[(prompt index, generated ids, finish reason)]`` (EOS included in the ids, as in the
    Rollout): a caller can start judging a completion while the others are still decoded.
    An exception it raises is a failure of this rank like any other.
    """
    if cfg.strategy not in ("greedy", "sample"):
        raise ConfigError(f"rollouts support strategy greedy or sample, got {cfg.strategy!r}")
    with torch.inference_mode():      # the decode itself: what leaves it are Python lists
        device = model.lm_head.weight.device
        dummy = torch.full((1, 1), pad_id, dtype=torch.long, device=device)
        rows = len(prompts)
        generated: list[list[int]] = [[] for _ in prompts]
        logprobs: list[list[float]] = [[] for _ in prompts]
        reasons = ["length"] * rows
        state = error = None
        try:
            if prompts:
                check_prompts(prompts, model, cfg.max_new_tokens)
                state = DecodeState(model, prompts, cfg.max_new_tokens, cfg.use_cache, pad_id)
                chooser = _Chooser(cfg, rows, rollout_seed(cfg.seed, rank, step), device)
        except Exception as e:  # noqa: BLE001 - reported to every rank below, then re-raised here
            error = e
        _, failed = agree(False, error is not None)
        if failed:
            raise _fail(rank, failed, 0, error) from error

        model.eval()
        active = state is not None
        alive = list(range(rows))                       # prompt index of each state row
        logits = state.logits(state.prefill()[:, -1]) if active else _dummy(model, dummy)   # [B, V]
        steps = 0
        while True:
            extend = False
            if active:
                try:
                    tokens, logp = chooser.choose(logits)
                    keep = []
                    for row, (prompt, token, lp) in enumerate(zip(alive, tokens.tolist(), logp.tolist(), strict=True)):
                        generated[prompt].append(token)
                        logprobs[prompt].append(lp)
                        if token == eos_id:
                            reasons[prompt] = "eos"
                        elif should_stop is not None and should_stop(prompt, generated[prompt]):
                            reasons[prompt] = "stop"
                        else:
                            keep.append(row)
                    extend = bool(keep) and steps < cfg.max_new_tokens - 1
                    if on_finish is not None:
                        kept = set(keep) if extend else set()
                        ended = [p for row, p in enumerate(alive) if row not in kept]
                        if ended:
                            on_finish([(p, generated[p], reasons[p]) for p in ended])
                    if extend and len(keep) < len(alive):
                        index = torch.tensor(keep, dtype=torch.long, device=device)
                        state.keep(index)
                        chooser.keep(keep)
                        tokens = tokens.index_select(0, index)
                        alive = [alive[r] for r in keep]
                except Exception as e:  # noqa: BLE001 - see above
                    error = e
            anyone, failed = agree(extend, error is not None)
            if failed:
                raise _fail(rank, failed, steps, error) from error
            if not anyone:
                break
            steps += 1
            if extend:
                logits = state.logits(state.step(tokens))
            else:
                active = False
                _dummy(model, dummy)
    return _pack(generated, logprobs, reasons, pad_id, device, steps)


def _dummy(model: KodaForCausalLM, dummy: torch.Tensor) -> None:
    """One pad token through the whole model, no cache: this rank's share of the collectives."""
    model.hidden_states(dummy)


def _pack(generated: list[list[int]], logprobs: list[list[float]], reasons: list[str], pad_id: int,
          device: torch.device, steps: int) -> Rollout:
    width = max((len(g) for g in generated), default=0)
    rows = len(generated)
    ids = torch.full((rows, width), pad_id, dtype=torch.long)
    logp = torch.zeros((rows, width), dtype=torch.float32)
    mask = torch.zeros((rows, width), dtype=torch.bool)
    for row, (tokens, lps) in enumerate(zip(generated, logprobs, strict=True)):
        ids[row, :len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        logp[row, :len(lps)] = torch.tensor(lps, dtype=torch.float32)
        mask[row, :len(tokens)] = True
    return Rollout(ids.to(device), logp.to(device), mask.to(device), reasons, steps)
