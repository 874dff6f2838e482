"""Inference test helpers: the seeded TINY model and random prompts."""

from __future__ import annotations

import torch

from koda.model import KodaForCausalLM
from tests.helpers.tiny import TINY


def tiny_model(seed: int = 0) -> KodaForCausalLM:
    torch.manual_seed(seed)
    return KodaForCausalLM(TINY).eval()


def random_prompts(lengths: tuple[int, ...], seed: int = 1) -> list[list[int]]:
    """Prompts of the given lengths, ids 4.. (clear of UNK/BOS/EOS/PAD)."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(4, TINY.vocab_size, (n,), generator=g).tolist() for n in lengths]
