"""KODA's optimizer: SGD-momentum under K-FAC, AdamW without, Muon's orthogonalised updates
next to AdamW, with per-group latency scaling.

Why SGD-momentum under K-FAC: the preconditioned gradient is already scaled by the
curvature; Adam would divide it again, per coordinate, by its own second-moment estimate,
which undoes K-FAC's scaling (kfac-pytorch pairs K-FAC with SGD for the same reason). The
AdamW rule is here so ``optimizer.name: adamw`` runs the same class (one checkpoint format,
the same latency scaling and noise).

A ``torch.optim.Optimizer`` subclass so DeepSpeed can wrap it under ZeRO-3 (with
``zero_allow_untested_optimizer``): DeepSpeed replaces each group's params by flat fp32
partitions and keeps the other group keys, so the per-group ``latency_scale`` survives;
the update is elementwise, so it is the same on a partition as on the whole tensor. The
K-FAC preconditioner cannot run here under ZeRO-3 (partitions have no layer shape); it is
an engine gradient transform there, and this class only carries its state in checkpoints.
In one process, pass ``grads`` and ``step`` preconditions first.

Per-group rules: a group may name its own ``rule`` (else the optimizer's) and an ``lr_scale``
(a factor on the scheduled lr, so DeepSpeed's scheduler, which sets every group's ``lr``, keeps
one schedule). Muon uses both: its matrices' groups take rule ``update`` (the gradient the
Muon transform wrote is the update itself, ``koda.optim.muon``), the rest AdamW at
``muon.adamw_lr / lr``.

Gradient noise (off by default): g + N(0, eta / (1 + t)^decay), Neelakantan et al. 2015's
annealed schedule; drawn from a generator seeded by (seed, step, group), so a rerun or a
resumed run draws the same noise.
"""

from __future__ import annotations

import math

import torch

from koda.errors import KodaError

RULES = ("sgd", "adamw", "update")


class KodaOptimizer(torch.optim.Optimizer):
    def __init__(self, params, lr: float, rule: str = "sgd", momentum: float = 0.9, nesterov: bool = False,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 latency_scale: float = 1.0, noise_eta: float = 0.0, noise_decay: float = 0.55, seed: int = 0,
                 preconditioner=None, grads=None):
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, betas=betas, eps=eps, weight_decay=weight_decay,
                        latency_scale=latency_scale, rule=rule, lr_scale=1.0)
        super().__init__(params, defaults)
        for group in self.param_groups:
            if group["rule"] not in RULES:
                raise KodaError(f"optimizer rule must be one of {', '.join(RULES)}, got {group['rule']!r}")
        self.rule, self.noise_eta, self.noise_decay, self.seed = rule, noise_eta, noise_decay, seed
        self.preconditioner, self.grads = preconditioner, grads

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self.preconditioner is not None and self.grads is not None:
            self.preconditioner(self.grads)
        for index, group in enumerate(self.param_groups):
            lr = group["lr"] * group["latency_scale"] * group["lr_scale"]
            for position, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                if self.noise_eta > 0:
                    g = g + self._noise(state, index, position, g)
                if group["weight_decay"]:
                    p.mul_(1 - lr * group["weight_decay"])
                if group["rule"] == "update":
                    p.add_(g, alpha=-lr)
                elif group["rule"] == "sgd":
                    if "momentum" not in state:
                        state["momentum"] = torch.zeros_like(p)
                    buf = state["momentum"].mul_(group["momentum"]).add_(g)
                    # Nesterov: g + μ·buf (torch.optim.SGD's form); groups saved before the
                    # option existed have no key and were plain momentum
                    step = g.add(buf, alpha=group["momentum"]) if group.get("nesterov", False) else buf
                    p.add_(step, alpha=-lr)
                else:
                    self._adamw(p, g, state, group, lr)
        return loss

    def _noise(self, state: dict, index: int, position: int, like: torch.Tensor) -> torch.Tensor:
        """N(0, eta / (1 + t)^decay) shaped like the parameter, t its own step count: under ZeRO-3
        DeepSpeed calls ``step`` once per parameter sub-group, so a counter per call would run
        ahead of the training step."""
        t = state.get("noise_t", 0)
        state["noise_t"] = t + 1
        generator = torch.Generator().manual_seed(hash((self.seed, t, index, position)) & 0x7FFFFFFF)
        sigma = math.sqrt(self.noise_eta / (1 + t) ** self.noise_decay)
        return (sigma * torch.randn(like.shape, generator=generator)).to(like)

    @staticmethod
    def _adamw(p, g, state, group, lr) -> None:
        beta1, beta2 = group["betas"]
        if "exp_avg" not in state:
            state["t"] = 0
            state["exp_avg"], state["exp_avg_sq"] = torch.zeros_like(p), torch.zeros_like(p)
        state["t"] += 1
        state["exp_avg"].lerp_(g, 1 - beta1)
        state["exp_avg_sq"].mul_(beta2).addcmul_(g, g, value=1 - beta2)
        bias1, bias2 = 1 - beta1 ** state["t"], 1 - beta2 ** state["t"]
        denom = (state["exp_avg_sq"] / bias2).sqrt_().add_(group["eps"])
        p.addcdiv_(state["exp_avg"], denom, value=-lr / bias1)

    # The gradient transform's state (K-FAC's factors and decompositions, Muon's momentum)
    # travels with the optimizer state, so a checkpoint of the optimizer is enough to resume it.
    def state_dict(self) -> dict:
        state = super().state_dict()
        state["koda"] = {"transform": self.preconditioner.state_dict() if self.preconditioner is not None else None}
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        extra = state_dict.pop("koda", None)
        super().load_state_dict(state_dict)
        if extra is None:
            return
        saved = extra["transform"] if "transform" in extra else extra["kfac"]     # "kfac": before Muon
        if (saved is None) != (self.preconditioner is None):
            raise KodaError("optimizer state: the checkpoint and this run disagree on whether a gradient "
                            "transform (K-FAC, Muon) is on")
        if self.preconditioner is not None:
            self.preconditioner.load_state_dict(saved)


def parameter_groups(model: torch.nn.Module, dense_scale: float = 1.0, expert_scale: float = 1.0,
                     muon=None, adamw_lr_scale: float = 1.0, kfac=None) -> list[dict]:
    """Two groups, each with its latency scale and ``expert`` flag (which scale it is, for the
    run's report): expert tensors and everything else. With `muon` (a ``MuonConfig``, on
    KODA's model before AutoEP) each splits again into Muon's matrices (rule ``update``) and
    AdamW's tensors (lr x `adamw_lr_scale`); AutoEP's replacement tensors inherit their
    source's group, so w1/w3/w2 stay Muon's. With `kfac` (a ``KFACConfig`` whose ``adamw_lr``
    is set) likewise: K-FAC's layers (the optimizer's default rule) and AdamW's rest."""
    from koda.optim.latency import is_expert_parameter
    from koda.optim.layers import preconditioned_parameters

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    rank = {n: len(getattr(p, "ds_shape", p.shape)) for n, p in named}          # ZeRO-3 partitions are flat
    if muon is not None:
        main, rule = (lambda n: muon.selects(n, rank[n])), {"rule": "update"}
    elif kfac is not None and kfac.adamw_lr is not None:
        factored = preconditioned_parameters(model, kfac.selects)
        main, rule = (lambda n: n in factored), {}
    else:
        main = rule = None
    groups = []
    for expert, scale in ((False, dense_scale), (True, expert_scale)):
        params = [(n, p) for n, p in named if is_expert_parameter(n) == expert]
        if main is None:
            groups.append({"params": [p for _, p in params], "latency_scale": scale, "expert": expert})
            continue
        groups.append({"params": [p for n, p in params if main(n)], "latency_scale": scale, "expert": expert,
                       **rule})
        groups.append({"params": [p for n, p in params if not main(n)], "latency_scale": scale,
                       "expert": expert, "rule": "adamw", "lr_scale": adamw_lr_scale})
    return [g for g in groups if g["params"]]
