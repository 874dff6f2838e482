"""Inference test helpers: the seeded TINY model, random prompts, a standalone model directory.

``write_standalone`` writes the directory ``koda convert`` writes (same config.json fields),
for tests that need a model directory but not a training run.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from koda.model import KodaForCausalLM
from tests.helpers.tiny import TINY


def tiny_model(seed: int = 0) -> KodaForCausalLM:
    torch.manual_seed(seed)
    return KodaForCausalLM(TINY).eval()


def random_prompts(lengths: tuple[int, ...], seed: int = 1) -> list[list[int]]:
    """Prompts of the given lengths, ids 4.. (clear of UNK/BOS/EOS/PAD)."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(4, TINY.vocab_size, (n,), generator=g).tolist() for n in lengths]


def write_standalone(model: KodaForCausalLM, directory: Path, tokenizer: str = "tokenizer.model") -> Path:
    """config.json + model.safetensors in the ``koda-standalone`` v1 layout (``koda convert``'s)."""
    directory.mkdir(parents=True, exist_ok=True)
    state = {name: t.detach().contiguous() for name, t in model.state_dict().items()}
    save_file(state, str(directory / "model.safetensors"))
    config = {"format": "koda-standalone", "format_version": 1, "model": model.cfg.to_dict(), "dtype": "float32",
              "tokenizer": tokenizer, "source": {"from": "tests"}}
    (directory / "config.json").write_text(json.dumps(config))
    return directory
