"""Orthogonality penalty on chosen weights, and singular-value statistics of the weights.

Penalty. ``P(W) = ||G - I||_F^2`` with ``G`` the smaller Gram matrix of W [m, n]: W^T W [n, n]
when m >= n, else W W^T [m, m], so I is reachable (a wide matrix cannot have orthonormal
columns). A 3-D expert tensor [E, m, n] is E matrices, penalised one by one and summed. The
trainer adds ``lambda_t * sum P`` to the loss, lambda_t rising linearly over the warm-up.

Why a forward-pre hook and an explicit gradient. Under ZeRO-3 a module's parameters hold
their full values only between DeepSpeed's forward-pre hook (gather) and forward hook
(release); a pre hook registered after DeepSpeed's runs inside that window, on every rank,
for every forward, so no extra collective is needed. Differentiating ``W^T W`` with autograd
would save W itself for backward, and by then DeepSpeed has replaced ``W.data`` with an
empty partition; so the hook computes dP/dW [m, n] on a detached copy right away and
``_GramPenalty`` hands it to the parameter in backward. The parameter's gradient then takes
DeepSpeed's normal path (summed with the cross-entropy gradient, reduce-scattered). Memory:
one gradient-sized copy per selected weight per micro-batch, held until backward.

Expert-parallel scaling. DeepSpeed averages an AutoEP expert's gradient over the whole
data-parallel world but sums it only over the expert-data-parallel group (the ranks that hold
that expert), so a term only the holders add reaches the update divided by ep_size. The hook
multiplies expert (3-D) terms by ``expert_scale`` = ep_size to undo that; the mean over ranks
of each rank's term is then exactly the penalty of the full model (dense terms are the same
on every rank; each expert is held by world/ep_size ranks).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import torch
from torch import nn

from koda.errors import KodaError
from koda.model.init import mp_edges


def gram_deviation(w: torch.Tensor) -> torch.Tensor:
    """||G - I||_F^2 per matrix of w [..., m, n], G the smaller Gram side; returns [...]."""
    m, n = w.shape[-2:]
    gram = w.transpose(-1, -2) @ w if m >= n else w @ w.transpose(-1, -2)     # [..., k, k], k = min(m, n)
    eye = torch.eye(min(m, n), dtype=w.dtype, device=w.device)
    return (gram - eye).pow(2).sum(dim=(-1, -2))


class _GramPenalty(torch.autograd.Function):
    """scale * sum of gram_deviation over the matrices of `weight`, with its gradient computed
    in forward (from the gathered values) and kept for backward; see the module docstring."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, scale: float) -> torch.Tensor:
        with torch.enable_grad():
            copy = weight.detach().float().requires_grad_(True)
            value = gram_deviation(copy).sum() * scale
            (grad,) = torch.autograd.grad(value, copy)
        ctx.save_for_backward(grad)
        ctx.dtype = weight.dtype
        return value.detach()

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (grad,) = ctx.saved_tensors
        return (grad * grad_out).to(ctx.dtype), None


def gram_penalty(weight: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Differentiable scale * sum_matrices ||G - I||_F^2 of a 2-D [m, n] or 3-D [E, m, n] weight; fp32 []."""
    return _GramPenalty.apply(weight, scale)


def penalty_weight(ortho_lambda: float, warmup_steps: int, step: int) -> float:
    """lambda for optimizer step `step` (0-based): lambda·(step+1)/warmup during the warm-up,
    so the first step already carries a little of it and step warmup-1 the whole."""
    if warmup_steps <= 0:
        return ortho_lambda
    return ortho_lambda * min(1.0, (step + 1) / warmup_steps)


def select_weights(module: nn.Module, patterns: Iterable[str]) -> list[tuple[str, nn.Module, str]]:
    """(full name, owning module, local name) of every 2-D or 3-D parameter whose full name
    matches one of the regexes `patterns` (``re.search``), in module order."""
    compiled = [re.compile(p) for p in patterns]
    found = []
    for prefix, owner in module.named_modules():
        for local, param in owner.named_parameters(recurse=False):
            name = f"{prefix}.{local}" if prefix else local
            # ds_shape: under ZeRO-3 a parameter outside its module's forward is an empty partition
            if len(getattr(param, "ds_shape", param.shape)) in (2, 3) and any(c.search(name) for c in compiled):
                found.append((name, owner, local))
    return found


class OrthoPenalty:
    """Adds, during every grad-enabled forward, each selected weight's penalty term to an
    accumulator the trainer empties once per micro-batch (``take``)."""

    def __init__(self, module: nn.Module, patterns: Iterable[str], expert_scale: float = 1.0):
        patterns = tuple(patterns)
        selected = select_weights(module, patterns)
        if not selected:
            raise KodaError(f"isometry.ortho_patterns {list(patterns)} match no 2-D or 3-D weight of the model "
                            "(names look like 'model.layers.0.self_attn.q_proj.weight', "
                            "'model.layers.0.mlp.experts.w1')")
        self.names = [name for name, _, _ in selected]
        self.expert_scale = expert_scale
        self.enabled = True
        self._terms: list[torch.Tensor] = []
        owners: dict[int, tuple[nn.Module, list[str]]] = {}
        for _, owner, local in selected:
            owners.setdefault(id(owner), (owner, []))[1].append(local)
        # registered after DeepSpeed's gather hook, so it runs while the weights are whole
        self._handles = [owner.register_forward_pre_hook(self._hook(locals_))
                         for owner, locals_ in owners.values()]

    def _hook(self, locals_: list[str]):
        def hook(owner: nn.Module, _inputs) -> None:
            if not (self.enabled and torch.is_grad_enabled()):
                return
            for local in locals_:
                weight = owner._parameters[local]
                shape = getattr(weight, "ds_shape", weight.shape)
                if weight.shape != shape:
                    raise KodaError(f"orthogonality penalty: {local} of {type(owner).__name__} is not gathered "
                                    f"in its forward (shape {tuple(weight.shape)}, full {tuple(shape)})")
                self._terms.append(gram_penalty(weight, self.expert_scale if weight.dim() == 3 else 1.0))
        return hook

    def take(self) -> torch.Tensor:
        """This rank's penalty sum since the last call ([], differentiable); zero if none ran."""
        terms, self._terms = self._terms, []
        return torch.stack(terms).sum() if terms else torch.zeros(())

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


# ---------------------------------------------------------------- spectrum statistics
_LAYER = re.compile(r"layers\.(\d+)\.")


def weight_kind(name: str) -> str:
    """``model.layers.3.self_attn.q_proj.weight`` -> ``q_proj``; ``...mlp.experts.w1`` ->
    ``experts.w1``; ``...mlp.router.gate.weight`` -> ``router.gate``."""
    parts = [p for p in name.split(".") if p != "weight"]
    if len(parts) >= 2 and parts[-2] in ("experts", "router"):
        return ".".join(parts[-2:])
    return parts[-1]


def spectrum_sample(names: Iterable[str], n_layers: int, max_layers: int) -> list[str]:
    """The 2-D/3-D weight names inside `max_layers` decoder layers spread evenly over the
    depth (first and last included); names outside ``layers.N`` (embeddings, head) are left out."""
    k = min(n_layers, max_layers)
    chosen = {round(i * (n_layers - 1) / (k - 1)) for i in range(k)} if k > 1 else {0}
    out = []
    for name in names:
        match = _LAYER.search(name)
        if match and int(match.group(1)) in chosen:
            out.append(name)
    return out


@torch.no_grad()
def spectrum_summary(weights: dict[str, torch.Tensor]) -> dict[str, list[float]]:
    """Per weight kind: [sv_max, sv_min, cond_max, inside, above, total, gram_dev_sum, matrices].

    Singular values of each matrix (each expert separately) against the Marchenko-Pastur bulk
    of an i.i.d. matrix with the same shape and entry RMS: ``inside`` counts values within
    it, ``above`` those beyond its upper edge (directions training has pulled out of the
    noise). The fields merge across ranks by max/min/sum (``merge_spectra``)."""
    out: dict[str, list[float]] = {}
    for name, w in weights.items():
        mats = w.float().reshape(-1, *w.shape[-2:])                                # [E or 1, m, n]
        values = torch.linalg.svdvals(mats)                                        # [E, min(m, n)]
        rms = mats.pow(2).mean(dim=(-1, -2)).sqrt()                                # [E]
        low, high = mp_edges(tuple(mats.shape[-2:]), 1.0)
        inside = ((values >= low * rms[:, None]) & (values <= high * rms[:, None])).sum()
        above = (values > high * rms[:, None]).sum()
        cond = values.max(dim=-1).values / values.min(dim=-1).values.clamp_min(1e-30)
        row = [values.max().item(), values.min().item(), cond.max().item(), float(inside), float(above),
               float(values.numel()), gram_deviation(mats).sum().item(), float(mats.shape[0])]
        kind = weight_kind(name)
        out[kind] = row if kind not in out else merge_rows(out[kind], row)
    return out


def merge_rows(a: list[float], b: list[float]) -> list[float]:
    return [max(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), *(x + y for x, y in zip(a[3:], b[3:], strict=True))]


def merge_spectra(summaries: Iterable[dict[str, list[float]]]) -> dict[str, float]:
    """Merged per-kind summaries (e.g. one per rank) as ``iso/<kind>/<stat>`` metrics.

    A kind must be counted the same number of times for every matrix (dense weights by one
    rank, each expert by all its holders alike): fractions and means are then exact."""
    merged: dict[str, list[float]] = {}
    for summary in summaries:
        for kind, row in summary.items():
            merged[kind] = row if kind not in merged else merge_rows(merged[kind], row)
    metrics = {}
    for kind, (smax, smin, cond, inside, above, total, gram, mats) in sorted(merged.items()):
        prefix = f"iso/{kind}/"
        metrics.update({prefix + "sv_max": smax, prefix + "sv_min": smin, prefix + "cond": cond,
                        prefix + "mp_inside": inside / total, prefix + "mp_above": above / total,
                        prefix + "gram_dev": gram / mats})
    return metrics
