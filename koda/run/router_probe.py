"""Observe every MoE layer: router logits for the balancing terms, routed counts for the load.

Two things are captured per MoE block ``layers.N.mlp``, in either layout (KODA's own
``MoEBlock`` or DeepSpeed's ``AutoEPMoELayer`` that replaces it under expert parallelism):

* the router logits [T, E], by a forward hook on the ``gate`` Linear (``mlp.gate`` or
  ``mlp.router.gate``), for the Switch balance loss and the z-loss;
* the expert counts [E] of the routing the block actually took, by a forward hook on the
  block: KODA's block records them (``routed_counts``), AutoEP's adds them to its
  ``tokens_per_expert`` buffer, which the probe zeroes before each forward it observes
  (nothing else reads it, and a float32 running total stops counting exactly past 2^24
  assignments per expert, a few thousand steps). Counting from
  the decision, not from a top-k of the logits, keeps the load statistics true for the
  switch, hash and Gumbel routers, which choose differently from a plain top-k.

The hash router has no gate and nothing to balance: its layers contribute counts only.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch
from torch import nn

from koda.model.moe import MoEBlock
from koda.naming import ROUTER_MODULE
from koda.objectives.balance import balance_loss_from_counts, router_z_loss

_BLOCK = re.compile(r"layers\.(\d+)\.mlp$")


def _is_moe_block(module: nn.Module) -> bool:
    return isinstance(module, MoEBlock) or isinstance(getattr(module, "tokens_per_expert", None), torch.Tensor)


class RouterProbe:
    """Captures each MoE layer's router logits and routed counts during a forward and turns
    them into the balancing loss (differentiable) and per-layer token counts (accumulated
    until read). `log` receives one line when some layers have no gate to balance."""

    def __init__(self, module: nn.Module, top_k: int, log: Callable[[str], None] | None = None):
        self.top_k = top_k
        self._logits: dict[int, list[torch.Tensor]] = {}
        self._routed: dict[int, list[torch.Tensor]] = {}
        self.layers: list[int] = []
        self._handles = []
        gated: set[int] = set()
        for name, child in module.named_modules():
            block = _BLOCK.search(name)
            if block and _is_moe_block(child):
                layer = int(block.group(1))
                self.layers.append(layer)
                self._handles.append(child.register_forward_pre_hook(self._before(layer)))
                self._handles.append(child.register_forward_hook(self._after(layer)))
            router = ROUTER_MODULE.search(name)
            if router and isinstance(child, nn.Linear):
                gated.add(int(router.group(1)))
                self._handles.append(child.register_forward_hook(self._capture(int(router.group(1)))))
        if not self.layers:
            raise ValueError("RouterProbe: no MoE block ('layers.N.mlp' with a router) found")
        self.gateless = [layer for layer in self.layers if layer not in gated]
        if self.gateless and log is not None:
            log(f"moe: layers {self.gateless} route without a gate (hash router): no balance or z-loss for them")
        self.enabled = True
        self._counts = {layer: torch.zeros(0) for layer in self.layers}

    def _capture(self, layer: int):
        def hook(_module, _inputs, output):
            if self.enabled:
                self._logits.setdefault(layer, []).append(output)
        return hook

    def _before(self, layer: int):
        def hook(module, _inputs):
            if self.enabled and not isinstance(module, MoEBlock):    # AutoEP: its buffer only adds
                with torch.no_grad():
                    module.tokens_per_expert.zero_()
        return hook

    def _after(self, layer: int):
        def hook(module, _inputs, _output):
            if not self.enabled:
                return
            mine = isinstance(module, MoEBlock)
            counts = module.routed_counts if mine else module.tokens_per_expert.detach().clone()
            self._routed.setdefault(layer, []).append(counts.detach().long())
        return hook

    def losses(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean over gated layers of (Switch balance loss, router z-loss) for the forward(s)
        since the last call, f_e taken from the routing actually taken; also adds this
        forward's token counts to the load statistics. Zeros when no layer has a gate."""
        balance, z = [], []
        for layer, routed in self._routed.items():
            counts = torch.stack(routed).sum(0)                              # [E]
            captured = self._logits.get(layer)
            if captured:
                logits = torch.cat(captured) if len(captured) > 1 else captured[0]
                balance.append(balance_loss_from_counts(logits, counts))
                z.append(router_z_loss(logits))
            previous = self._counts[layer]
            self._counts[layer] = counts if previous.numel() == 0 else previous + counts
        self._logits.clear()
        self._routed.clear()
        if not balance:
            zero = torch.zeros(())
            return zero, zero
        return torch.stack(balance).mean(), torch.stack(z).mean()

    def discard(self) -> None:
        """Drop captured logits and counts without using them (evaluation forwards)."""
        self._logits.clear()
        self._routed.clear()

    def take_counts(self) -> dict[int, torch.Tensor]:
        """Token counts per layer ([E] each) since the last call, this rank only."""
        counts, self._counts = self._counts, {layer: torch.zeros(0) for layer in self.layers}
        return {layer: c for layer, c in counts.items() if c.numel()}

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def load_stats(table: dict[int, torch.Tensor]) -> dict:
    """Load metrics from per-layer expert counts (layer -> [E], summed over ranks).

    Per layer: ``tokens`` (counts), ``share`` (each expert's fraction of the assignments),
    ``utilisation`` (fraction of experts that received any token), ``load_std`` (population
    standard deviation of ``share``: 0 for perfectly even routing, sqrt(E-1)/E when one expert
    takes everything) and ``load_max_min``. Then the worst layer of each: ``moe/load_max_min``
    and ``moe/load_std`` (largest), ``moe/utilisation`` (smallest).
    """
    out: dict = {}
    for layer in sorted(table):
        row = table[layer].double()                                          # [E]
        share = row / row.sum().clamp_min(1.0)
        out[f"moe/layer{layer}/tokens"] = [int(v) for v in row.tolist()]
        out[f"moe/layer{layer}/share"] = [round(float(v), 6) for v in share.tolist()]
        out[f"moe/layer{layer}/utilisation"] = float((row > 0).double().mean())
        out[f"moe/layer{layer}/load_std"] = float(share.std(unbiased=False))
        out[f"moe/layer{layer}/load_max_min"] = float(row.max() / row.min().clamp_min(1.0))
    if table:
        worst = {"load_max_min": max, "load_std": max, "utilisation": min}
        for metric, pick in worst.items():
            out[f"moe/{metric}"] = pick(v for k, v in out.items() if k.endswith(f"/{metric}"))
    return out
