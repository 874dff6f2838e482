"""Contrastive search (Su et al. 2022, "A Contrastive Framework for Neural Text Generation").

At each step the k most likely tokens v are the candidates, and the chosen one maximises

    (1 - alpha) * conf(v) - alpha * max_j cos(h_v, h_j)

where conf(v) is log p(v | x) (KODA's default; the paper uses p(v | x), ``score="prob"``),
h_v is the final normalised hidden state the model produces *with v appended*, and h_j runs
over the hidden states of every real context token, prompt included. The penalty term
(the "degeneration penalty") pushes away from tokens whose representation repeats
something already said; alpha = 0 is greedy decoding.

h_v needs a forward pass per candidate. All k candidates of all prompts go through the
model as one batch of B*k single-token rows, and the forward of the chosen candidate
already yields the next step's logits, so a contrastive token costs one k-times wider
forward, the same count as a greedy token. Only the chosen candidate's row goes through
the output projection: the other k - 1 rows are needed for their hidden states alone.

Layout: after the prefill the decoding state is expanded once to B*k rows (row b*k + j
holds candidate j of prompt b) and stays that wide. The k rows of a prompt share their
past, so after a choice only the newest position is copied from the chosen row to its
siblings (``DecodeState.adopt``) instead of re-gathering the whole KV cache twice per step.
The context hidden states are kept once per prompt, [B, capacity, D], not per row.
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
    """Chooses tokens for a DecodeState of B prompts held as B*k rows."""

    def __init__(self, k: int, alpha: float, score: str):
        self.k, self.alpha, self.score = k, alpha, score
        self.hidden: torch.Tensor | None = None      # [B, capacity, D] unit context states

    def prepare(self, state: DecodeState, prompt_hidden: torch.Tensor) -> None:
        """After the prefill: prompt_hidden [B, P, D]. Expands `state` to B*k rows."""
        B, P, D = prompt_hidden.shape
        self.hidden = torch.zeros((B, state.ids.shape[1], D), dtype=torch.float32, device=prompt_hidden.device)
        self.hidden[:, :P] = F.normalize(prompt_hidden.float(), dim=-1)
        state.keep(torch.arange(B, device=prompt_hidden.device).repeat_interleave(self.k))

    def keep(self, state: DecodeState, prompts: torch.Tensor) -> None:
        """Keep prompts `prompts` ([B'] long), with all their candidate rows."""
        state.keep((prompts[:, None] * self.k + torch.arange(self.k, device=prompts.device)).reshape(-1))
        self.hidden = self.hidden.index_select(0, prompts)

    def choose(self, state: DecodeState, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """logits: [B, V] -> (chosen tokens [B], logits after them [B, V]); appends the tokens to `state`."""
        B, k, t = logits.shape[0], self.k, state.length
        top_logprobs, top_ids = torch.log_softmax(logits, dim=-1).topk(k, dim=-1)    # [B, k], sorted
        raw = state.step(top_ids.reshape(-1))                                        # [B*k, D]
        cand_hidden = F.normalize(raw.float(), dim=-1)
        valid = state.mask[::k, :t]                                                  # [B, t]
        penalty = degeneration_penalty(cand_hidden.view(B, k, -1), self.hidden[:, :t], valid)
        best = scores(top_logprobs, penalty, self.alpha, self.score).argmax(dim=-1)  # [B]
        chosen = torch.arange(B, device=logits.device) * k + best                    # [B] rows
        state.adopt(chosen.repeat_interleave(k), start=t)
        self.hidden[:, t] = cand_hidden.index_select(0, chosen)
        next_logits = state.logits(raw.index_select(0, chosen))                      # [B, V]
        return top_ids.gather(1, best[:, None]).squeeze(1), next_logits
