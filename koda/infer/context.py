"""The decoding state of a batch: what each row has seen, with or without a KV cache.

Prompts are left-padded into one ``[B, capacity]`` buffer so every row's newest token sits
in the same column and one forward serves the whole batch; the boolean mask marks real
tokens and is passed to the model only when some row is padded (otherwise the model takes
its plain causal path). With ``use_cache`` the model sees only the new token each step and
reads the rest from the KV cache; without it, the whole context is recomputed every step,
which is slow but carries no state between steps, so tests and the benchmark use it as the
reference.

Contrastive search runs k alternative next tokens side by side (``candidates``): they
become k extra query positions of the same row, all at the next position, each attending
to the real context and to itself only. Keys and values of the context are therefore read
once per row, not once per candidate, and the cache needs only k - 1 spare slots instead
of k copies. ``accept`` then keeps the chosen alternative.
"""

from __future__ import annotations

import torch

from koda.model.attention import build_attention_mask
from koda.model.transformer import KodaForCausalLM


def candidate_mask(valid: torch.Tensor, k: int) -> torch.Tensor:
    """valid: [B, t] bool context (False = padding) -> [B, 1, k, t + k] bool: candidate j sees
    the real context tokens and key t + j (itself), not its k - 1 siblings."""
    B, t = valid.shape
    own = torch.eye(k, dtype=torch.bool, device=valid.device).expand(B, 1, k, k)
    return torch.cat([valid[:, None, None, :].expand(B, 1, k, t), own], dim=-1)


class DecodeState:
    """ids, mask: [B, capacity]; positions < `length` are filled, and every row's newest
    token is at `length - 1`."""

    def __init__(self, model: KodaForCausalLM, prompts: list[list[int]], max_new_tokens: int, use_cache: bool,
                 pad_id: int, alternatives: int = 1):
        """alternatives: how many candidates ``candidates`` will run at once (sizes the cache)."""
        device = model.lm_head.weight.device
        rows, width = len(prompts), max(map(len, prompts))
        capacity = width + max_new_tokens
        self.model = model
        self.ids = torch.full((rows, capacity), pad_id, dtype=torch.long, device=device)
        self.mask = torch.zeros((rows, capacity), dtype=torch.bool, device=device)
        for row, prompt in enumerate(prompts):
            self.ids[row, width - len(prompt):width] = torch.tensor(prompt, dtype=torch.long)
            self.mask[row, width - len(prompt):width] = True
        self.length = width
        self.padded = any(len(p) != width for p in prompts)
        self.cache = model.new_cache(rows, capacity + alternatives - 1) if use_cache else None

    def _run(self, new: int) -> torch.Tensor:
        """Forward the last `new` tokens -> their final hidden states [B, new, D]."""
        mask = self.mask[:, :self.length] if self.padded else None
        if self.cache is not None:
            return self.model.hidden_states(self.ids[:, self.length - new:self.length], mask, self.cache)
        return self.model.hidden_states(self.ids[:, :self.length], mask)[:, -new:]

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: [N, D] -> next-token logits [N, V] in fp32, for just the rows that need them."""
        return self.model.lm_head(hidden).float()

    def prefill(self) -> torch.Tensor:
        """Run the prompts -> their final hidden states [B, P, D] (left-padded positions included)."""
        return self._run(self.length)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append tokens [B] to the rows and run them -> their final hidden states [B, D]."""
        self.ids[:, self.length] = tokens
        self.mask[:, self.length] = True
        self.length += 1
        return self._run(1)[:, -1]

    def candidates(self, tokens: torch.Tensor) -> torch.Tensor:
        """Run k alternative next tokens per row, tokens [B, k] -> their final hidden states
        [B, k, D]. Nothing is appended until ``accept``."""
        B, k = tokens.shape
        t = self.length
        valid = self.mask[:, :t]                                                     # [B, t]
        position = valid.sum(dim=-1, keepdim=True).expand(B, k)                      # [B, k] next position
        rows = candidate_mask(valid, k)                                              # [B, 1, k, t + k]
        if self.cache is not None:
            return self.model.hidden_states(tokens, rows, self.cache, position)
        context = build_attention_mask(valid, t, 0)                                  # [B, 1, t, t]
        context = torch.cat([context, context.new_zeros((B, 1, t, k))], dim=-1)
        positions = torch.cat([(valid.long().cumsum(-1) - 1).clamp(min=0), position], dim=-1)
        hidden = self.model.hidden_states(torch.cat([self.ids[:, :t], tokens], dim=-1),
                                          torch.cat([context, rows], dim=2), None, positions)
        return hidden[:, t:]

    def accept(self, choice: torch.Tensor, tokens: torch.Tensor) -> None:
        """After ``candidates``: append tokens [B], which were alternatives choice [B] (long)."""
        t = self.length
        self.ids[:, t] = tokens
        self.mask[:, t] = True
        self.length = t + 1
        if self.cache is not None:
            self.cache.keep_alternative(t, choice)

    def keep(self, rows: torch.Tensor) -> None:
        """Keep batch rows `rows` ([B'] long): drop finished prompts."""
        self.ids = self.ids.index_select(0, rows)
        self.mask = self.mask.index_select(0, rows)
        if self.cache is not None:
            self.cache.reorder(rows)
