"""Full copies of a few named parameters of a ZeRO-3 module, for diagnostics.

``zero.GatheredParameters`` is a collective (an all-gather over each parameter's partition
group), so every rank must call this with the same names in the same order, even if only
one rank looks at the result. An AutoEP expert tensor gathers within its expert-data-parallel
group: each rank gets its own experts [E/ep, ...], not all E. A module that is not
partitioned (a plain model in one process) passes through unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


@torch.no_grad()
def full_weights(module: nn.Module, names: Iterable[str]) -> dict[str, torch.Tensor]:
    """name -> detached fp32 copy of that parameter's whole (this rank's experts') values."""
    from deepspeed import zero

    params = dict(module.named_parameters())
    out = {}
    for name in names:           # one at a time: the peak is one gathered weight
        param = params[name]
        with zero.GatheredParameters([param]):
            out[name] = param.data.detach().float().clone()
    return out
