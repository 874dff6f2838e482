"""The gradient path between backward and step, for preconditioners such as K-FAC.

Under ZeRO-3 a parameter's gradient is partitioned over the ranks as soon as backward
finishes, so ``param.grad`` is empty. DeepSpeed's ``safe_get_full_grad`` gathers the full
gradient (a collective: every rank must call it, for the same parameters, in the same order)
and ``safe_set_full_grad`` writes a full gradient back into the partitions. This module is
the only caller of both.

A ``GradientTransform`` is any callable taking a ``GradientAccess``; the ``Engine`` runs its
transforms at each gradient-accumulation boundary, after the last backward and before the
optimizer step (so the clipping and the step see the transformed gradients).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import torch


class GradientAccess:
    """Full (unpartitioned) gradients of one engine's trainable parameters, by name."""

    def __init__(self, module: torch.nn.Module):
        self._params = {name: p for name, p in module.named_parameters() if p.requires_grad}

    def names(self) -> Iterator[str]:
        return iter(self._params)

    def parameter(self, name: str) -> torch.nn.Parameter:
        return self._params[name]

    def get(self, name: str) -> torch.Tensor | None:
        """The full fp32 gradient of `name` with the parameter's full shape (collective)."""
        from deepspeed.utils import safe_get_full_grad

        return safe_get_full_grad(self._params[name])

    def set(self, name: str, grad: torch.Tensor) -> None:
        """Replace the gradient of `name` by `grad` (full shape; collective)."""
        from deepspeed.utils import safe_set_full_grad

        safe_set_full_grad(self._params[name], grad)


class GradientTransform(Protocol):
    def __call__(self, grads: GradientAccess) -> None: ...
