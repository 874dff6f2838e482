"""The decoding state of a batch: what each row has seen, with or without a KV cache.

Prompts are left-padded into one ``[B, capacity]`` buffer so every row's newest token sits
in the same column and one forward serves the whole batch; the boolean mask marks real
tokens and is passed to the model only when some row is padded (otherwise the model takes
its plain causal path). With ``use_cache`` the model sees only the new token each step and
reads the rest from the KV cache; without it, the whole context is recomputed every step,
which is slow but carries no state between steps, so tests and the benchmark use it as the
reference.
"""

from __future__ import annotations

import torch

from koda.model.transformer import KodaForCausalLM


class DecodeState:
    """ids, mask: [B, capacity]; positions < `length` are filled, and every row's newest
    token is at `length - 1`."""

    def __init__(self, model: KodaForCausalLM, prompts: list[list[int]], max_new_tokens: int, use_cache: bool,
                 pad_id: int):
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
        self.cache = model.new_cache(rows, capacity) if use_cache else None

    @property
    def rows(self) -> int:
        return self.ids.shape[0]

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

    def keep(self, rows: torch.Tensor) -> None:
        """Keep batch rows `rows` ([B'] long, repeats allowed): drop finished prompts, or
        repeat each row k times for contrastive candidates."""
        self.ids = self.ids.index_select(0, rows)
        self.mask = self.mask.index_select(0, rows)
        if self.cache is not None:
            self.cache.reorder(rows)

    def adopt(self, rows: torch.Tensor, start: int) -> None:
        """Row i takes row rows[i]'s positions from `start` on ([B] long); the rows must
        already agree before `start`, so only the tail is copied."""
        self.ids[:, start:self.length] = self.ids[rows, start:self.length]
        self.mask[:, start:self.length] = self.mask[rows, start:self.length]
        if self.cache is not None:
            self.cache.reorder(rows, start)
