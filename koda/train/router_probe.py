"""Observe every MoE router through a forward hook on its ``gate`` Linear.

Both KODA's own ``MoEBlock`` (``layers.N.mlp.gate``) and DeepSpeed's ``AutoEPMoELayer``
(``layers.N.mlp.router.gate``) compute the router logits with a ``gate`` Linear applied to
the flattened tokens [T, D], so one hook serves both: the balancing loss and the load
counts are the same code whether AutoEP is on or off.
"""

from __future__ import annotations

import torch
from torch import nn

from koda.naming import ROUTER_MODULE
from koda.objectives.balance import router_z_loss, switch_balance_loss


class RouterProbe:
    """Captures each MoE layer's router logits during a forward and turns them into the
    balancing loss (differentiable) and per-layer token counts (accumulated until read)."""

    def __init__(self, module: nn.Module, top_k: int):
        self.top_k = top_k
        self._logits: dict[int, list[torch.Tensor]] = {}
        self.layers: list[int] = []
        self._handles = []
        for name, child in module.named_modules():
            match = ROUTER_MODULE.search(name)
            if match and isinstance(child, nn.Linear):
                layer = int(match.group(1))
                self.layers.append(layer)
                self._handles.append(child.register_forward_hook(self._capture(layer)))
        if not self.layers:
            raise ValueError("RouterProbe: no MoE router ('layers.N.mlp.gate' or '...mlp.router.gate') found")
        self.enabled = True
        self._counts = {layer: torch.zeros(0) for layer in self.layers}

    def _capture(self, layer: int):
        def hook(_module, _inputs, output):
            if self.enabled:
                self._logits.setdefault(layer, []).append(output)
        return hook

    def losses(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean over layers of (Switch balance loss, router z-loss) for the forward(s) since
        the last call; also adds this forward's token counts to the load statistics."""
        balance, z = [], []
        for layer, captured in self._logits.items():
            logits = torch.cat(captured) if len(captured) > 1 else captured[0]
            loss, counts = switch_balance_loss(logits, self.top_k)
            balance.append(loss)
            z.append(router_z_loss(logits))
            previous = self._counts[layer]
            self._counts[layer] = counts if previous.numel() == 0 else previous + counts
        self._logits.clear()
        if not balance:
            zero = torch.zeros(())
            return zero, zero
        return torch.stack(balance).mean(), torch.stack(z).mean()

    def discard(self) -> None:
        """Drop captured logits without using them (evaluation forwards)."""
        self._logits.clear()

    def take_counts(self) -> dict[int, torch.Tensor]:
        """Token counts per layer ([E] each) since the last call, this rank only."""
        counts, self._counts = self._counts, {layer: torch.zeros(0) for layer in self.layers}
        return {layer: c for layer, c in counts.items() if c.numel()}

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
