"""Muon (``optimizer.name: muon``): momentum, then each hidden weight matrix's update
orthogonalised by a quintic Newton-Schulz iteration; AdamW on everything else.

Which tensors (``MuonConfig.selects``, on KODA names): every 2-D weight (attention
projections, dense FFN, the router ``gate``) and every expert tensor [E, out, in], which is E
matrices orthogonalised one by one (batched); embeddings, ``lm_head`` (``muon.skip``) and 1-D
tensors go to AdamW, as Muon's authors use it (Jordan et al. 2024; Moonlight, Liu et al. 2025).
Under AutoEP the experts are ``w1``, ``w3`` [E, F, D] and ``w2`` [E, D, F]: the gate and up
projections are two matrices per expert there, not KODA's fused ``gate_up_proj`` [E, 2F, D],
so a plain KODA model and the engine orthogonalise the experts' gate/up differently.

Why a gradient transform rather than a rule inside the optimizer: under ZeRO-3 the optimizer
DeepSpeed holds sees flat fp32 partitions, which may cut a matrix anywhere, and Newton-Schulz
needs the whole matrix. So, like K-FAC, ``Muon`` runs between backward and step on the
gradient views (``koda.distributed.gradients``: the full gradient of a dense matrix, this
rank's experts of an expert tensor), keeps the momentum per matrix there, and writes back
``scale * O`` as the gradient; ``KodaOptimizer``'s Muon groups then apply it as the update
(rule ``update``: p <- p (1 - lr wd) - lr g, torch.optim.Muon's decoupled decay) and its other
groups step AdamW. The momentum buffers and the step counter are this object's
``state_dict``, which ``KodaOptimizer.state_dict`` carries into each rank's optimizer-states
file (experts' buffers differ per rank), so a resumed run continues with the same momentum.

The rule, per matrix, is torch.optim.Muon's (torch 2.13): buf <- mu buf + (1 - mu) g;
u = (1 - mu) g + mu buf with Nesterov, else buf; O = NS(u); update = scale(A, B) O with
A x B the matrix (the last two axes). scale: ``match_rms_adamw`` 0.2 sqrt(max(A, B)) (the
default: Moonshot's, the update's RMS is AdamW's, so AdamW's lr and weight decay carry over)
or ``original`` sqrt(max(1, A / B)) (Keller Jordan's). Unlike torch's, the iteration runs
batched over experts and in fp32 by default (torch casts to bf16 for tensor-core speed; fp32
keeps ranks and one process equal to 1e-5; ``ns_dtype: bfloat16`` restores it).

Clipping: DeepSpeed clips after the gradient transforms, which would clip the orthogonalised
updates; with ``clip`` > 0 this object clips the raw gradients instead, every one (AdamW's
too), before the momentum, by DeepSpeed's rule g / ((|g| + 1e-6) / clip) when that shrinks,
and the run sets DeepSpeed's ``gradient_clipping`` to 0 (``koda.pretrain.optimizer``).
"""

from __future__ import annotations

import math

import torch

from koda.errors import KodaError
from koda.naming import koda_name
from koda.optim.clipping import RawGradientClip
from koda.optim.config import MuonConfig

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)       # Keller Jordan's quintic, as torch.optim.Muon
NS_EPS = 1e-7


def orthogonalise(g: torch.Tensor, steps: int = 5, dtype: torch.dtype = torch.float32,
                  coefficients: tuple[float, float, float] = NS_COEFFICIENTS, eps: float = NS_EPS) -> torch.Tensor:
    """Approximately U Vᵀ of each matrix's SVD U S Vᵀ: g [..., A, B] -> [..., A, B] in `dtype`.

    Every leading index is its own matrix (an expert tensor [E, A, B] is E matrices), each
    divided by its own Frobenius norm first so its spectral norm is at most 1. The quintic's
    singular values land in about [0.7, 1.2], not exactly 1 (the coefficients trade that for
    speed; see torch.optim._muon). Wide orientation inside (A <= B) so the Gram matrix is the
    small one."""
    if g.dim() < 2:
        raise KodaError(f"muon: orthogonalise needs a matrix or a stack of them, got shape {list(g.shape)}")
    a, b, c = coefficients
    x = g.to(dtype).reshape(-1, *g.shape[-2:])            # [M, A, B], M matrices
    tall = x.size(-2) > x.size(-1)
    if tall:
        x = x.mT
    x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)
    for _ in range(steps):
        # torch.optim.Muon's fused form (addmm there, baddbmm here): the same roundings in bf16
        gram = x @ x.mT                                    # [M, min, min]
        x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return (x.mT if tall else x).reshape(g.shape)


def update_scale(rows: int, cols: int, adjust: str) -> float:
    """The factor on an orthogonalised [rows, cols] update (see the module docstring)."""
    if adjust == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    if adjust == "original":
        return math.sqrt(max(1.0, rows / cols))
    raise KodaError(f"muon: unknown lr adjustment {adjust!r}")


class Muon:
    """The gradient transform: ``muon(grads)`` once per optimizer step, after backward.

    `grads`: ``koda.optim.ParamGrads`` (a plain module) or the engine's ``GradientAccess``;
    `model`: the module whose parameter names `grads` uses (an engine's, AutoEP names and all).
    """

    def __init__(self, model: torch.nn.Module, config: MuonConfig, clip: float = 0.0):
        self.config = config
        self._dtype = getattr(torch, config.ns_dtype)
        self.matrices: list[str] = []        # Muon's, in a fixed order (collectives follow it)
        self.others: list[str] = []          # AdamW's
        for name, p in model.named_parameters():
            if p.requires_grad:
                shape = getattr(p, "ds_shape", p.shape)
                (self.matrices if config.selects(koda_name(name), len(shape)) else self.others).append(name)
        if not self.matrices:
            raise KodaError("muon: no weight matrix selected (optimizer.muon.skip matches every one)")
        self.momentum: dict[str, torch.Tensor] = {}      # name -> fp32 buffer, the gradient view's shape
        self.steps = 0
        self.clipping = RawGradientClip([*self.matrices, *self.others], clip)

    @property
    def last_grad_norm(self) -> float:
        """The last step's raw gradient norm, before clipping."""
        return self.clipping.last_norm

    def __call__(self, grads) -> None:
        self.step(grads)

    @torch.no_grad()
    def step(self, grads) -> None:
        c = self.config
        # the raw gradient's norm, logged as train/grad_norm (DeepSpeed's would be the updates')
        coef = self.clipping.coefficient(grads)
        for name in self.matrices:
            g = self._get(grads, name).float()                       # [A, B] or [E_local, A, B]
            if coef != 1.0:
                g = g * coef
            buf = self.momentum.get(name)
            if buf is None:
                buf = self.momentum[name] = torch.zeros_like(g)
            buf.lerp_(g, 1 - c.momentum)
            u = g.lerp(buf, c.momentum) if c.nesterov else buf
            o = orthogonalise(u, c.ns_steps, self._dtype).float()
            self._set(grads, name, o * update_scale(o.size(-2), o.size(-1), c.adjust_lr))
        self.clipping.scale(grads, self.others, coef)
        self.steps += 1

    # ------------------------------------------------------------ gradient views
    @staticmethod
    def _expert(grads, name: str) -> bool:
        return hasattr(grads, "is_expert") and grads.is_expert(name)

    def _get(self, grads, name: str) -> torch.Tensor:
        """A dense matrix's full gradient [A, B]; an expert tensor's local experts [E_local, A, B]."""
        return grads.get_experts(name).values if self._expert(grads, name) else grads.get(name)

    def _set(self, grads, name: str, value: torch.Tensor) -> None:
        if self._expert(grads, name):
            grads.set_experts(name, value)
        else:
            grads.set(name, value)

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {"steps": self.steps, "matrices": list(self.matrices),
                "momentum": {n: b.clone() for n, b in self.momentum.items()}}

    def load_state_dict(self, state: dict) -> None:
        if list(state["matrices"]) != self.matrices:
            raise KodaError("muon state: the checkpoint's matrices differ from this run's (another model "
                            "or optimizer.muon.skip)")
        self.steps = int(state["steps"])
        self.momentum = {n: b.clone().float() for n, b in state["momentum"].items()}
