"""Token-level generation: a batch of prompts in, one completion per prompt out.

The loop is the same for every strategy: choose a token per row, record it, drop the rows
that finished (end-of-sequence token, a stop condition, or the length limit), and feed the
rest forward. Finished rows are removed from the batch (cache included) rather than padded
along, so a long completion does not make the short ones pay for their idle steps.

Greedy and sampling choose from the logits they are given and need one forward per token
afterwards; contrastive search runs its forward while choosing (see ``contrastive``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from koda.data.tokenizer import EOS, PAD
from koda.errors import KodaError
from koda.infer.config import GenerationConfig
from koda.infer.context import DecodeState
from koda.infer.contrastive import ContrastiveSearch
from koda.infer.sampling import kept_distribution, row_generators, sample
from koda.model.transformer import KodaForCausalLM

FINISH_REASONS = ("eos", "stop", "length")


@dataclass(frozen=True)
class Completion:
    token_ids: list[int]   # generated tokens; the end-of-sequence token is not included
    finish_reason: str     # one of FINISH_REASONS


class _Greedy:
    def prepare(self, state: DecodeState, prompt_hidden: torch.Tensor) -> None:
        pass

    def keep(self, state: DecodeState, rows: torch.Tensor) -> None:
        state.keep(rows)

    def choose(self, state: DecodeState, logits: torch.Tensor) -> tuple[torch.Tensor, None]:
        """logits: [B, V] -> (tokens [B], None: the caller runs the next forward)."""
        return logits.argmax(dim=-1), None


class _Sampling(_Greedy):
    def __init__(self, cfg: GenerationConfig, rows: int, device: torch.device):
        self.cfg = cfg
        self.generators = row_generators(cfg.seed, rows, device)

    def keep(self, state: DecodeState, rows: torch.Tensor) -> None:
        state.keep(rows)
        self.generators = [self.generators[r] for r in rows.tolist()]

    def choose(self, state: DecodeState, logits: torch.Tensor) -> tuple[torch.Tensor, None]:
        probs, ids = kept_distribution(logits, self.cfg.temperature, self.cfg.top_k, self.cfg.top_p)
        return sample(probs, ids, self.generators), None


def _strategy(cfg: GenerationConfig, rows: int, device: torch.device):
    if cfg.strategy == "greedy":
        return _Greedy()
    if cfg.strategy == "sample":
        return _Sampling(cfg, rows, device)
    return ContrastiveSearch(cfg.candidates, cfg.alpha, cfg.score)


def check_prompts(prompts: list[list[int]], model: KodaForCausalLM, max_new_tokens: int) -> None:
    if not prompts:
        raise KodaError("no prompts to generate from")
    vocab, limit = model.cfg.vocab_size, model.cfg.max_seq_len
    for i, prompt in enumerate(prompts):
        if not prompt:
            raise KodaError(f"prompt {i} is empty (it needs at least one token)")
        if min(prompt) < 0 or max(prompt) >= vocab:
            raise KodaError(f"prompt {i} has token ids outside the model's vocabulary [0, {vocab})")
        if len(prompt) + max_new_tokens > limit:
            raise KodaError(f"prompt {i} has {len(prompt)} tokens; with max_new_tokens {max_new_tokens} it "
                            f"exceeds the model's max_seq_len {limit}")


@torch.inference_mode()
def generate(model: KodaForCausalLM, prompts: list[list[int]], cfg: GenerationConfig, *, eos_id: int | None = EOS,
             pad_id: int = PAD, should_stop: Callable[[int, list[int]], bool] | None = None) -> list[Completion]:
    """Complete every prompt (token ids) -> one Completion per prompt, in order.

    should_stop(prompt_index, generated_ids) is asked after each token a prompt receives
    (stop strings, see ``koda.infer.stops``); True ends that prompt with reason "stop".
    """
    check_prompts(prompts, model, cfg.max_new_tokens)
    model.eval()
    device = model.lm_head.weight.device
    state = DecodeState(model, prompts, cfg.max_new_tokens, cfg.use_cache, pad_id,
                        alternatives=cfg.candidates if cfg.strategy == "contrastive" else 1)
    strategy = _strategy(cfg, len(prompts), device)
    generated: list[list[int]] = [[] for _ in prompts]
    reasons = ["length"] * len(prompts)
    alive = list(range(len(prompts)))            # prompt index of each state row
    prompt_hidden = state.prefill()              # [B, P, D]
    logits = state.logits(prompt_hidden[:, -1])  # [B, V]
    strategy.prepare(state, prompt_hidden)
    for step in range(cfg.max_new_tokens):
        tokens, next_logits = strategy.choose(state, logits)
        keep = []
        for row, (prompt, token) in enumerate(zip(alive, tokens.tolist(), strict=True)):
            if token == eos_id:
                reasons[prompt] = "eos"
                continue
            generated[prompt].append(token)
            if should_stop is not None and should_stop(prompt, generated[prompt]):
                reasons[prompt] = "stop"
                continue
            keep.append(row)
        if not keep or step == cfg.max_new_tokens - 1:
            break
        if len(keep) < len(alive):
            rows = torch.tensor(keep, dtype=torch.long, device=device)
            strategy.keep(state, rows)
            tokens = tokens.index_select(0, rows)
            next_logits = next_logits.index_select(0, rows) if next_logits is not None else None
            alive = [alive[r] for r in keep]
        logits = next_logits if next_logits is not None else state.logits(state.step(tokens))
    return [Completion(ids, reason) for ids, reason in zip(generated, reasons, strict=True)]
