"""The run config's ``optimizer`` section: which optimizer, K-FAC's settings, the latency scaling.

The DeepSpeed config keeps batch sizes and precision; this section says what happens to the
gradients between backward and step, and how the step's learning rate is scaled.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

from koda.errors import ConfigError


@dataclass(frozen=True)
class KFACConfig:
    """K-FAC's settings. The defaults are the schedule and step rule ``tools/bench_optim.py`` measured
    best on the smoke and small presets (docs/optimizer.md): statistics every 5 steps, inverses
    every 25, each unit's step rescaled to RMS 0.2 x lr instead of the KL clip (which only worked
    at rates too small to move the factored layers), inverses in fp32 unless a unit needs fp64.
    kfac-pytorch's textbook schedule is ``factor_update_steps: 1, inv_update_steps: 10,
    kl_clip: 0.001, update_rms: null, inverse_dtype: float64``."""

    factor_update_steps: int = 5      # capture activations/gradients and update A, S every N steps
    inv_update_steps: int = 25        # eigendecompose (or invert) the damped factors every N steps
    damping: float = 1e-3             # Tikhonov λ, split between A and S by the π-correction
    min_damping: float = 1e-8         # floor of each factor's share of λ
    factor_decay: float = 0.95        # running average: A <- decay A + (1 - decay) A_batch
    kl_clip: float | None = None      # scale the update so lr² Σ ĝ·g <= kl_clip; None: off
    # each unit's (each expert's) preconditioned gradient rescaled to this RMS, Muon's
    # match_rms_adamw for K-FAC's direction: the step size is lr x update_rms in every layer;
    # None: off. Replaces the KL clip (both set is refused)
    update_rms: float | None = 0.2
    inverse: str = "eigen"            # "eigen" (eigendecomposition) or "cholesky" (damped inverses)
    inverse_dtype: str = "auto"       # preconditioning dtype: float64, float32, or auto per unit (kfac.py)
    include: tuple[str, ...] = (".*",)   # module-name regexes (re.search) to precondition
    # The vocabulary projection's S is V x V (V^3 per decomposition): left to the base optimizer.
    skip: tuple[str, ...] = ("lm_head",)
    # the parameters K-FAC does not precondition (embeddings, norms, skipped layers): AdamW at this
    # lr (betas: optimizer.betas); None: the SGD-momentum step at optimizer.lr, as the rest. Tune it
    # per model (tuned: 3e-3 on smoke, 1e-3 on small, both 10x K-FAC's lr)
    adamw_lr: float | None = None

    def __post_init__(self) -> None:
        for name in ("factor_update_steps", "inv_update_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"optimizer.kfac.{name} must be a positive integer, got {value!r}")
        if self.inv_update_steps % self.factor_update_steps:
            raise ConfigError(f"optimizer.kfac.inv_update_steps {self.inv_update_steps} is not a multiple of "
                              f"factor_update_steps {self.factor_update_steps}")
        if not (isinstance(self.damping, int | float) and self.damping > 0):
            raise ConfigError(f"optimizer.kfac.damping must be > 0, got {self.damping!r}")
        if not (isinstance(self.min_damping, int | float) and self.min_damping >= 0):
            raise ConfigError(f"optimizer.kfac.min_damping must be >= 0, got {self.min_damping!r}")
        if not (isinstance(self.factor_decay, int | float) and 0 <= self.factor_decay < 1):
            raise ConfigError(f"optimizer.kfac.factor_decay must be in [0, 1), got {self.factor_decay!r}")
        if self.kl_clip is not None and not (isinstance(self.kl_clip, int | float) and self.kl_clip > 0):
            raise ConfigError(f"optimizer.kfac.kl_clip must be > 0 or null, got {self.kl_clip!r}")
        if self.update_rms is not None:
            rms = self.update_rms
            if isinstance(rms, bool) or not isinstance(rms, int | float) or rms <= 0:
                raise ConfigError(f"optimizer.kfac.update_rms must be > 0 or null, got {self.update_rms!r}")
            if self.kl_clip is not None:
                raise ConfigError("optimizer.kfac.update_rms sets every layer's step size, so the KL clip has "
                                  "nothing to clip: set update_rms: null to use kl_clip (update_rms is 0.2 "
                                  "unless set)")
        if self.inverse not in ("eigen", "cholesky"):
            raise ConfigError(f"optimizer.kfac.inverse must be 'eigen' or 'cholesky', got {self.inverse!r}")
        if self.inverse_dtype not in ("float32", "float64", "auto"):
            raise ConfigError("optimizer.kfac.inverse_dtype must be 'float32', 'float64' or 'auto', "
                              f"got {self.inverse_dtype!r}")
        if self.adamw_lr is not None and (isinstance(self.adamw_lr, bool) or not isinstance(self.adamw_lr, int | float)
                                          or not self.adamw_lr > 0):
            raise ConfigError(f"optimizer.kfac.adamw_lr must be > 0 or null, got {self.adamw_lr!r}")
        for name in ("include", "skip"):
            for pattern in getattr(self, name):
                try:
                    re.compile(pattern)
                except re.error as e:
                    raise ConfigError(f"optimizer.kfac.{name}: bad regex {pattern!r} ({e})") from None

    def selects(self, module_name: str) -> bool:
        return (any(re.search(p, module_name) for p in self.include)
                and not any(re.search(p, module_name) for p in self.skip))


@dataclass(frozen=True)
class MuonConfig:
    """Muon (``optimizer.name: muon``): hidden weight matrices orthogonalised, AdamW on the rest."""

    momentum: float = 0.95            # EMA of the gradient, torch.optim.Muon's form (buf.lerp_(g, 1 - mu))
    nesterov: bool = True             # orthogonalise g.lerp(buf, mu), not buf
    ns_steps: int = 5                 # quintic Newton-Schulz iterations (3.4445, -4.7750, 2.0315)
    ns_dtype: str = "float32"        # "bfloat16" as Keller's and torch's code (faster on GPUs, less exact)
    # update scale per matrix [A, B]: "match_rms_adamw" 0.2 * sqrt(max(A, B)) (Moonshot: AdamW's lr and
    # weight decay carry over), "original" sqrt(max(1, A / B)) (Keller Jordan; wants lr ~ 0.02)
    adjust_lr: str = "match_rms_adamw"
    adamw_lr: float | None = None     # the AdamW groups' peak lr; None: optimizer.lr
    # KODA parameter names (re.search) left to AdamW besides every 1-D tensor: the authors keep
    # embeddings and the output head off Muon (hidden matrices only)
    skip: tuple[str, ...] = ("embed_tokens", "lm_head")

    def __post_init__(self) -> None:
        if isinstance(self.momentum, bool) or not (isinstance(self.momentum, int | float) and 0 <= self.momentum < 1):
            raise ConfigError(f"optimizer.muon.momentum must be in [0, 1), got {self.momentum!r}")
        if not isinstance(self.nesterov, bool):
            raise ConfigError(f"optimizer.muon.nesterov must be true or false, got {self.nesterov!r}")
        if isinstance(self.ns_steps, bool) or not isinstance(self.ns_steps, int) or not 1 <= self.ns_steps < 100:
            raise ConfigError(f"optimizer.muon.ns_steps must be an integer in [1, 100), got {self.ns_steps!r}")
        if self.ns_dtype not in ("float32", "bfloat16"):
            raise ConfigError(f"optimizer.muon.ns_dtype must be 'float32' or 'bfloat16', got {self.ns_dtype!r}")
        if self.adjust_lr not in ("match_rms_adamw", "original"):
            raise ConfigError("optimizer.muon.adjust_lr must be 'match_rms_adamw' or 'original', "
                              f"got {self.adjust_lr!r}")
        if self.adamw_lr is not None and (isinstance(self.adamw_lr, bool) or not isinstance(self.adamw_lr, int | float)
                                          or not self.adamw_lr > 0):
            raise ConfigError(f"optimizer.muon.adamw_lr must be > 0 or null, got {self.adamw_lr!r}")
        for pattern in self.skip:
            try:
                re.compile(pattern)
            except re.error as e:
                raise ConfigError(f"optimizer.muon.skip: bad regex {pattern!r} ({e})") from None

    def selects(self, koda_name: str, ndim: int) -> bool:
        """Muon's matrices, by KODA name and logical rank: 2-D weights and 3-D experts
        [E, out, in] (E matrices), minus `skip`; norms and biases (1-D) never."""
        expert = ".experts." in f".{koda_name}"
        return (ndim == 2 or (ndim == 3 and expert)) and not any(re.search(p, koda_name) for p in self.skip)


@dataclass(frozen=True)
class OptimizerConfig:
    # "adamw"; "kfac": K-FAC-preconditioned gradients, SGD-momentum step; "muon": Muon + AdamW
    name: str = "adamw"
    lr: float = 3e-4                  # muon: the Muon matrices' lr (muon.adamw_lr the rest's)
    momentum: float = 0.9             # kfac (SGD) only
    nesterov: bool = False            # kfac (SGD) only: step g + momentum x buffer (torch's SGD nesterov)
    betas: tuple[float, float] = (0.9, 0.95)   # adamw, and muon's AdamW groups
    weight_decay: float = 0.0         # decoupled (every rule)
    kfac: KFACConfig = field(default_factory=KFACConfig)
    muon: MuonConfig = field(default_factory=MuonConfig)
    kappa: float = 0.0                # torus-latency scaling lr / (1 + kappa * L[us]); 0 = off
    topology: str | None = None       # topology file for L (the one given to koda launch --topology)
    noise_eta: float = 0.0            # annealed gradient noise variance eta / (1 + t)^noise_decay; 0 = off
    noise_decay: float = 0.55

    def __post_init__(self) -> None:
        if self.name not in ("adamw", "kfac", "muon"):
            raise ConfigError(f"optimizer.name must be 'adamw', 'kfac' or 'muon', got {self.name!r}")
        for name in ("lr", "kappa", "weight_decay", "noise_eta", "noise_decay", "momentum"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ConfigError(f"optimizer.{name} must be >= 0, got {value!r}")
        if not self.lr > 0:
            raise ConfigError(f"optimizer.lr must be > 0, got {self.lr!r}")
        if not isinstance(self.nesterov, bool):
            raise ConfigError(f"optimizer.nesterov must be true or false, got {self.nesterov!r}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"optimizer.betas must be two numbers in [0, 1), got {list(self.betas)!r}")
        if self.kappa > 0 and self.topology is None:
            raise ConfigError("optimizer.kappa > 0 needs optimizer.topology (the file koda launch places ranks by)")
        if self.name == "muon" and self.noise_eta > 0:
            # the noise would land on the orthogonalised update, not on the gradient
            raise ConfigError("optimizer.noise_eta > 0 is not supported with optimizer.name muon")

    @classmethod
    def from_dict(cls, values: dict | None) -> OptimizerConfig:
        values = dict(values or {})
        _no_unknown("optimizer", values, cls)
        kfac = values.pop("kfac", None) or {}
        if not isinstance(kfac, dict):
            raise ConfigError(f"optimizer.kfac must be a mapping, got {kfac!r}")
        _no_unknown("optimizer.kfac", kfac, KFACConfig)
        kfac = {k: tuple(v) if k in ("include", "skip") and isinstance(v, list) else v for k, v in kfac.items()}
        muon = values.pop("muon", None) or {}
        if not isinstance(muon, dict):
            raise ConfigError(f"optimizer.muon must be a mapping, got {muon!r}")
        _no_unknown("optimizer.muon", muon, MuonConfig)
        muon = {k: tuple(v) if k == "skip" and isinstance(v, list) else v for k, v in muon.items()}
        if "betas" in values:
            values["betas"] = tuple(values["betas"])
        return cls(kfac=KFACConfig(**kfac), muon=MuonConfig(**muon), **values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _no_unknown(section: str, values: dict, cls) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{section}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
