"""The optimizers ``tools/bench_optim.py`` compares, each built on one plain (unpartitioned) model
from the benchmark's settings (its argparse namespace): AdamW, torch's and KODA's Muon, SOAP,
K-FAC with its step rules, and the controls that take parts of K-FAC away (see the tool's
docstring for what each one is)."""

from __future__ import annotations

from dataclasses import replace

import torch

from koda.optim import KFACConfig, KFACPreconditioner, ParamGrads
from koda.optim.config import MuonConfig
from koda.optim.muon import Muon
from koda.optim.optimizer import KodaOptimizer, parameter_groups

GRIDS = {"adamw": "3e-4,1e-3,3e-3,1e-2", "muon": "1e-3,3e-3,1e-2,3e-2", "koda-muon": "1e-3,3e-3,1e-2,3e-2",
         "soap": "3e-4,1e-3,3e-3,1e-2", "kfac": "3e-6,1e-5,3e-5,1e-4,3e-4,1e-3,3e-3,1e-2",
         "kfac-rms": "3e-5,1e-4,3e-4,1e-3", "rms-sgd": "3e-5,1e-4,3e-4,1e-3",
         "frozen-hidden": "1e-3,3e-3,1e-2", "adamw-split": "1e-4,3e-4,1e-3,3e-3"}
KFAC_FAMILY = ("kfac", "kfac-rms", "rms-sgd", "frozen-hidden", "adamw-split")


class Stepper:
    """One or two torch optimizers stepped together, with the run's schedule on all their groups."""

    def __init__(self, optimizers, schedule, pre=None):
        self.optimizers, self.pre = list(optimizers), pre
        self.schedulers = [torch.optim.lr_scheduler.LambdaLR(o, schedule) for o in self.optimizers]

    def zero_grad(self):
        for o in self.optimizers:
            o.zero_grad(set_to_none=True)

    def step(self):
        for o in self.optimizers:
            o.step()
        for s in self.schedulers:
            s.step()

    @property
    def state(self) -> list:
        return [s for o in self.optimizers for s in o.state.values()]


def hidden_matrix(name: str, p: torch.Tensor) -> bool:
    return p.ndim == 2 and "embed_tokens" not in name and "lm_head" not in name


def build(name: str, lr: float, model, args, schedule) -> Stepper:
    if name == "adamw":
        return Stepper([KodaOptimizer(parameter_groups(model), lr=lr, rule="adamw", betas=(0.9, 0.95))], schedule)
    if name == "muon":
        named = list(model.named_parameters())
        matrices = [p for n, p in named if hidden_matrix(n, p)]
        rest = [p for n, p in named if not hidden_matrix(n, p)]
        return Stepper([torch.optim.Muon(matrices, lr=lr, adjust_lr_fn="match_rms_adamw"),
                        torch.optim.AdamW(rest, lr=lr, betas=(0.9, 0.95), weight_decay=0.0)], schedule)
    if name == "koda-muon":
        cfg = MuonConfig()
        return Stepper([KodaOptimizer(parameter_groups(model, muon=cfg), lr=lr, rule="adamw", betas=(0.9, 0.95),
                                      preconditioner=Muon(model, cfg), grads=ParamGrads(model))], schedule)
    if name == "soap":
        import pytorch_optimizer

        return Stepper([pytorch_optimizer.SOAP(model.parameters(), lr=lr, precondition_frequency=args.soap_every,
                                               max_precondition_dim=args.soap_max_dim)], schedule)
    if name == "frozen-hidden":         # K-FAC's layers left as initialised, the rest at lr
        return kfac_split_adamw(model, args, lr, 0.0, 1.0, schedule)
    if name == "adamw-split":           # K-FAC's layers at lr, the rest at --kfac-adamw-lr
        return kfac_split_adamw(model, args, lr, 1.0, (args.kfac_adamw_lr or lr) / lr, schedule)
    if name in ("kfac", "kfac-rms", "rms-sgd"):
        holder, cfg = {}, kfac_config(args)
        if name != "kfac":
            cfg = replace(cfg, update_rms=args.kfac_update_rms, kl_clip=None)
        if name == "rms-sgd":      # (S + γ_S I)⁻¹ G (A + γ_A I)⁻¹ -> G / λ: no curvature left in the direction
            cfg = replace(cfg, damping=1e12)
        pre = KFACPreconditioner(model, cfg, lr=lambda: holder["opt"].param_groups[0]["lr"])
        groups = parameter_groups(model, kfac=cfg, adamw_lr_scale=(cfg.adamw_lr or lr) / lr)
        opt = holder["opt"] = KodaOptimizer(groups, lr=lr, rule="sgd", momentum=0.9, nesterov=args.kfac_nesterov,
                                            betas=(0.9, 0.95), preconditioner=pre, grads=ParamGrads(model))
        return Stepper([opt], schedule, pre)
    raise SystemExit(f"unknown optimizer {name!r} ({', '.join(GRIDS)})")


def kfac_split_adamw(model, args, lr: float, factored_scale: float, rest_scale: float, schedule) -> Stepper:
    """AdamW on K-FAC's split of the parameters: the layers K-FAC factors at lr x factored_scale,
    the rest (embeddings, norms, skipped layers) at lr x rest_scale."""
    cfg = replace(kfac_config(args), adamw_lr=lr * rest_scale)      # any rate: it makes the split
    groups = parameter_groups(model, kfac=cfg, adamw_lr_scale=rest_scale)
    for group in groups:
        if group.get("rule") != "adamw":
            group["lr_scale"] = factored_scale
    return Stepper([KodaOptimizer(groups, lr=lr, rule="adamw", betas=(0.9, 0.95))], schedule)


def kfac_config(args) -> KFACConfig:
    return KFACConfig(factor_update_steps=args.kfac_factor_every, inv_update_steps=args.inv_every,
                      damping=args.damping, factor_decay=args.factor_decay, kl_clip=args.kl_clip, update_rms=None,
                      inverse_dtype=args.inverse_dtype, adamw_lr=args.kfac_adamw_lr,
                      skip=tuple(getattr(args, "kfac_skip", "lm_head").split(",")))
