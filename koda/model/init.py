"""Weight initialisation and the singular-value check of its result.

``normal``: N(0, std²), with the residual-stream output projections (o_proj, down_proj)
scaled by 1/sqrt(2·n_layers) so the residual variance does not grow with depth (GPT-2).

``orthogonal``: every matrix (each expert's slice separately) gets a flat singular-value
spectrum, all values equal to the RMS singular value the normal init would have had,
σ·sqrt(max(m, n)). Same Frobenius norm as ``normal``, but no Marchenko-Pastur spread, so
the layer's Jacobian starts isometric (Saxe et al. 2014). ``spectrum_report`` shows both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from koda.model.config import ModelConfig

_RESIDUAL_OUTPUTS = ("o_proj.weight", "down_proj.weight", "experts.down_proj")


def _matrices(name: str, param: torch.Tensor) -> list[torch.Tensor]:
    """A parameter's matrices: itself if 2-D, its per-expert slices if 3-D, none if 1-D."""
    if param.dim() == 2:
        return [param]
    if param.dim() == 3:
        return list(param.unbind(0))
    return []


def _std_for(name: str, cfg: ModelConfig) -> float:
    if name.endswith(_RESIDUAL_OUTPUTS):
        return cfg.init_std / math.sqrt(2 * cfg.n_layers)
    return cfg.init_std


@torch.no_grad()
def init_weights(model: nn.Module, cfg: ModelConfig) -> None:
    """Initialise every parameter of `model`, one module at a time, through ``Module.apply``.

    Each call touches only the module's own parameters, so a caller that holds a module's
    weights only while it is being initialised (DeepSpeed's ``zero.Init`` wraps ``apply`` to
    gather one module, run this, and partition it again) gets the same values as a model built
    whole: the order of random draws is the same (leaf modules in definition order). Values are
    drawn in fp32 and copied in, so a bf16 parameter holds the fp32 init rounded once, exactly
    what a model built in fp32 and cast afterwards holds.
    """
    names = {id(module): prefix for prefix, module in model.named_modules()}

    def init_module(module: nn.Module) -> None:
        prefix = names[id(module)]
        for local, param in module.named_parameters(recurse=False):
            _init_parameter(f"{prefix}.{local}" if prefix else local, param, cfg)

    model.apply(init_module)


def _init_parameter(name: str, param: torch.Tensor, cfg: ModelConfig) -> None:
    if param.dim() == 1:            # RMSNorm scales
        param.fill_(1.0)
        return
    std = _std_for(name, cfg)
    for matrix in _matrices(name, param):
        # new_empty, not torch.empty: zero.Init casts torch.empty's result to the training dtype
        value = matrix if matrix.dtype == torch.float32 else matrix.new_empty(matrix.shape, dtype=torch.float32)
        if cfg.init == "orthogonal":
            nn.init.orthogonal_(value, gain=std * math.sqrt(max(value.shape)))
        else:
            nn.init.normal_(value, mean=0.0, std=std)
        if value is not matrix:
            matrix.copy_(value)


@dataclass(frozen=True)
class SpectrumRow:
    """Singular values of one weight (pooled over experts for 3-D tensors)."""

    name: str
    shape: tuple[int, ...]
    smin: float
    smax: float
    smean: float
    condition: float
    mp_low: float    # Marchenko-Pastur edges for an i.i.d. N(0, std²) matrix of this shape:
    mp_high: float   # std·(sqrt(max) - sqrt(min)) and std·(sqrt(max) + sqrt(min))


def mp_edges(shape: tuple[int, int], std: float) -> tuple[float, float]:
    """Marchenko-Pastur edges of the singular values of an i.i.d. N(0, std²) matrix of `shape`:
    std·(sqrt(max) - sqrt(min)) and std·(sqrt(max) + sqrt(min)) (the large-matrix limit)."""
    m, n = max(shape), min(shape)
    return std * (math.sqrt(m) - math.sqrt(n)), std * (math.sqrt(m) + math.sqrt(n))


@torch.no_grad()
def spectrum_report(model: nn.Module, cfg: ModelConfig) -> list[SpectrumRow]:
    rows = []
    for name, param in model.named_parameters():
        mats = _matrices(name, param)
        if not mats:
            continue
        values = torch.cat([torch.linalg.svdvals(m.float()) for m in mats])
        rows.append(SpectrumRow(name, tuple(param.shape), values.min().item(), values.max().item(),
                                values.mean().item(), (values.max() / values.min().clamp_min(1e-30)).item(),
                                *mp_edges(tuple(mats[0].shape), _std_for(name, cfg))))
    return rows


@torch.no_grad()
def load_weights(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy `state` (full tensors, KODA names) into `model`, one module at a time through
    ``Module.apply``, for the same reason as ``init_weights``: a network being built under
    DeepSpeed's ``zero.Init`` holds a module's weights whole only inside ``apply``.
    Every parameter must be in `state` with its shape (``--init-from`` checked the model)."""
    names = {id(module): prefix for prefix, module in model.named_modules()}

    def load_module(module: nn.Module) -> None:
        prefix = names[id(module)]
        for local, param in module.named_parameters(recurse=False):
            param.copy_(state[f"{prefix}.{local}" if prefix else local])

    model.apply(load_module)
