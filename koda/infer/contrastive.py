"""Contrastive search (Su et al. 2022, "A Contrastive Framework for Neural Text Generation").

At each step the k most likely tokens v are the candidates, and the chosen one maximises

    (1 - alpha) * conf(v) - alpha * max_j cos(h_v, h_j)

where conf(v) is log p(v | x) (KODA's default; the paper uses p(v | x), ``score="prob"``),
h_v is the final normalised hidden state the model produces *with v appended*, and h_j runs
over the hidden states of every real context token, prompt included. The penalty term
(the "degeneration penalty") pushes away from tokens whose representation repeats
something already said; alpha = 0 is greedy decoding.

h_v needs a forward pass per candidate. All k candidates of all prompts go through the
model in one batched forward, as k query positions of their prompt's row that share the
next position and see the context and themselves only (``DecodeState.candidates``), so
the context's keys and values are read once per prompt, not k times. The forward of the
chosen candidate already yields the next step's logits, so a contrastive token costs one
forward over k tokens per prompt, the same count of forwards as a greedy token. Only the
chosen candidate goes through the output projection: the other k - 1 are needed for their
hidden states alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from koda.infer.context import DecodeState


def degeneration_penalty(candidates: torch.Tensor, context: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """candidates: [B, k, D] unit; context: [B, T, D] unit; valid: [B, T] bool (False = padding)
    -> [B, k], the largest cosine similarity of each candidate to a real context token."""
    sims = torch.bmm(candidates, context.transpose(1, 2))                       # [B, k, T]
    return sims.masked_fill(~valid[:, None, :], float("-inf")).amax(dim=-1)


def scores(logprobs: torch.Tensor, penalty: torch.Tensor, alpha: float, score: str) -> torch.Tensor:
    """logprobs, penalty: [B, k] -> [B, k], the quantity contrastive search maximises."""
    confidence = logprobs if score == "logprob" else logprobs.exp()
    return (1.0 - alpha) * confidence - alpha * penalty


class ContrastiveSearch:
    """Chooses tokens for a DecodeState; keeps the unit-norm context hidden states per prompt."""

    def __init__(self, k: int, alpha: float, score: str):
        self.k, self.alpha, self.score = k, alpha, score
        self.hidden: torch.Tensor | None = None      # [B, capacity, D] unit context states

    def prepare(self, state: DecodeState, prompt_hidden: torch.Tensor) -> None:
        """After the prefill: prompt_hidden [B, P, D] (padding positions are masked later)."""
        B, P, D = prompt_hidden.shape
        self.hidden = torch.zeros((B, state.ids.shape[1], D), dtype=torch.float32, device=prompt_hidden.device)
        self.hidden[:, :P] = F.normalize(prompt_hidden.float(), dim=-1)

    def keep(self, state: DecodeState, rows: torch.Tensor) -> None:
        state.keep(rows)
        self.hidden = self.hidden.index_select(0, rows)

    def choose(self, state: DecodeState, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """logits: [B, V] -> (chosen tokens [B], logits after them [B, V]); appends the tokens to `state`."""
        B, t = logits.shape[0], state.length
        rows = torch.arange(B, device=logits.device)
        top_logprobs, top_ids = torch.log_softmax(logits, dim=-1).topk(self.k, dim=-1)  # [B, k], sorted
        raw = state.candidates(top_ids)                                                  # [B, k, D]
        unit = F.normalize(raw.float(), dim=-1)
        penalty = degeneration_penalty(unit, self.hidden[:, :t], state.mask[:, :t])      # [B, k]
        best = scores(top_logprobs, penalty, self.alpha, self.score).argmax(dim=-1)      # [B]
        tokens = top_ids[rows, best]
        state.accept(best, tokens)
        self.hidden[:, t] = unit[rows, best]
        return tokens, state.logits(raw[rows, best])
