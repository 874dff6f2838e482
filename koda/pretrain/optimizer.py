"""KODA's optimizer in a training run: ``KodaOptimizer`` as DeepSpeed's client optimizer, K-FAC
or Muon as the engine's gradient transform.

Under ZeRO-3 the optimizer sees flat fp32 partitions, so the K-FAC preconditioner cannot run
inside its ``step``: it runs at the accumulation boundary through the engine
(``Engine.add_gradient_transform``), before DeepSpeed clips and steps. The optimizer only
carries the preconditioner's state: ``KodaOptimizer.state_dict`` holds it, DeepSpeed writes
that per rank into the rank's optimizer-states file and hands it back on load, so a resumed
run continues with the same factors, decompositions and step counters (expert units differ
per rank, which a per-rank file keeps apart).

The learning rate: DeepSpeed's configured scheduler runs on the client optimizer's groups,
scaling ``optimizer.lr``; each group's ``latency_scale`` multiplies it at the step. K-FAC's KL
clip reads the engine's current rate (group 0's, before latency scaling).

Muon takes the same path (``koda.optim.muon`` says why), its momentum riding in the same
checkpoint slot. It, and K-FAC with ``update_rms``, also take over DeepSpeed's
``gradient_clipping`` (``ClientOptimizer.plan``): DeepSpeed would clip after the transform,
i.e. the orthogonalised or rescaled updates.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

from koda.errors import ConfigError
from koda.optim.config import OptimizerConfig
from koda.optim.optimizer import KodaOptimizer, parameter_groups


@dataclass(frozen=True)
class Scales:
    """The per-group learning-rate factors (1 when latency scaling is off)."""

    dense: float = 1.0
    expert: float = 1.0


def latency(cfg: OptimizerConfig, rank: int, world: int, ep_size: int | None = None) -> Scales:
    """This rank's latency scales from ``optimizer.topology`` with the placement ``koda launch``
    chooses for it (``koda.topology.place``); 1 when ``optimizer.kappa`` is 0.

    ``ep_size`` is the DeepSpeed plan's expert-parallel size (``DeepSpeedPlan.ep_size``): the
    groups DeepSpeed forms, so the expert group's latency and the placement are computed for
    them, whatever the topology file's ``parallel.expert_parallel_size`` says. None keeps the
    file's value (which ``koda launch`` has checked against the plan)."""
    if cfg.kappa == 0:
        return Scales()
    from koda.optim.latency import latency_scales
    from koda.topology import load_topology, place

    topology = load_topology(cfg.topology)
    if topology.world_size != world:
        raise ConfigError(f"optimizer.topology {cfg.topology} describes {topology.world_size} ranks, "
                          f"this run has {world}")
    if ep_size is not None:
        topology = topology.with_expert_parallel(ep_size)
    s = latency_scales(topology, place(topology), rank, cfg.kappa)
    return Scales(s.dense, s.expert)


class ClientOptimizer:
    """Builds the ``KodaOptimizer`` DeepSpeed wraps, then attaches K-FAC or Muon to the built engine."""

    def __init__(self, cfg: OptimizerConfig, seed: int, scales: Scales):
        self.cfg, self.seed, self.scales = cfg, seed, scales
        self.optimizer: KodaOptimizer | None = None
        self.kfac = None
        self.muon = None
        self.clip = 0.0                   # the transform's clipping, taken from the DeepSpeed config by `plan`

    def plan(self, plan):
        """The DeepSpeed plan this optimizer runs under: with Muon or K-FAC's ``update_rms``,
        ``gradient_clipping`` moves from DeepSpeed (which would clip the orthogonalised or
        rescaled updates) to the transform (which clips the raw gradients,
        ``koda.optim.clipping``); otherwise `plan` unchanged."""
        if not self.rewrites_update_norms:
            return plan
        config = copy.deepcopy(plan.config)
        self.clip = float(config.get("gradient_clipping", 0.0) or 0.0)
        config["gradient_clipping"] = 0.0
        return replace(plan, config=config)

    @property
    def rewrites_update_norms(self) -> bool:
        """The transform sets the updates' norms itself, so DeepSpeed must not clip after it."""
        return self.cfg.name == "muon" or (self.cfg.name == "kfac" and self.cfg.kfac.update_rms is not None)

    @property
    def raw_grad_norm(self) -> float | None:
        """The raw gradient norm the transform measured, where it took over clipping; else None."""
        transform = self.muon or self.kfac
        return transform.clipping.last_norm if transform is not None and self.rewrites_update_norms else None

    def parameters(self, model):
        """``build_engine``'s `parameters`: dense and expert groups, each with its latency scale
        (DeepSpeed remaps the expert group to AutoEP's replacement tensors); with Muon each split
        into Muon's matrices and AdamW's rest."""
        c = self.cfg
        if c.name == "kfac" and c.kfac.adamw_lr is not None:
            return parameter_groups(model, self.scales.dense, self.scales.expert, kfac=c.kfac,
                                    adamw_lr_scale=c.kfac.adamw_lr / c.lr)
        if c.name != "muon":
            return parameter_groups(model, self.scales.dense, self.scales.expert)
        adamw = (c.muon.adamw_lr if c.muon.adamw_lr is not None else c.lr) / c.lr
        return parameter_groups(model, self.scales.dense, self.scales.expert, muon=c.muon, adamw_lr_scale=adamw)

    def __call__(self, groups) -> KodaOptimizer:
        """``build_engine``'s `optimizer` factory."""
        c = self.cfg
        self.optimizer = KodaOptimizer(groups, lr=c.lr, rule="sgd" if c.name == "kfac" else "adamw",
                                       momentum=c.momentum, nesterov=c.nesterov, betas=c.betas,
                                       weight_decay=c.weight_decay, noise_eta=c.noise_eta, noise_decay=c.noise_decay,
                                       seed=self.seed)
        return self.optimizer

    def applied_scales(self) -> dict[str, float | None]:
        """{"dense", "expert"}: the latency scale the built optimizer's groups of each kind carry
        (after DeepSpeed's wrapping and any resumed state), what its steps multiply the
        scheduled rate by; None where no group is of that kind."""
        if self.optimizer is None:
            raise ConfigError("optimizer: the engine was built without KODA's optimizer")
        found = {g["expert"]: g["latency_scale"] for g in self.optimizer.param_groups if "expert" in g}
        return {"dense": found.get(False), "expert": found.get(True)}

    def attach(self, engine) -> None:
        """K-FAC (``optimizer.name: kfac``) or Muon (``muon``) on the engine's module, as its
        gradient transform; its state rides in the optimizer's checkpoint. Call before the
        engine loads a checkpoint."""
        if self.cfg.name not in ("kfac", "muon"):
            return
        if self.optimizer is None:
            raise ConfigError("optimizer: the engine was built without KODA's optimizer")
        if self.cfg.name == "kfac":
            from koda.optim.data_parallel import DataParallelKFAC

            transform = self.kfac = DataParallelKFAC(engine.module, self.cfg.kfac, lr=engine.lr, clip=self.clip)
        else:
            from koda.optim.muon_data_parallel import DataParallelMuon

            transform = self.muon = DataParallelMuon(engine.module, self.cfg.muon, clip=self.clip)
        # grads stays None: under ZeRO-3 the engine runs the transform, not the optimizer
        self.optimizer.preconditioner = transform
        engine.add_gradient_transform(transform)
