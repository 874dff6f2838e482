"""The K-FAC preconditioner: between backward and step, G -> (S + γ_S I)⁻¹ G (A + γ_A I)⁻¹.

Not an optimizer: it rewrites gradients in place and any first-order step follows (the
layout of kfac-pytorch). It reads and writes gradients through a ``grads`` object with
``get(name) -> Tensor`` and ``set(name, Tensor)`` by parameter name: ``ParamGrads`` for a
plain module, ``koda.distributed.gradients.GradientAccess`` under ZeRO-3 (the flat fp32
partitions DeepSpeed hands its optimizer have no layer shape, so this is the only place
layer-shaped preconditioning can happen). Calling the preconditioner with such an object is
exactly an engine gradient transform.

Schedule, counted in optimizer steps k (one ``step`` call per accumulation boundary):
hooks record statistics on steps with k % factor_update_steps == 0 (over all micro-batches
of that step), folded into the running averages at the boundary; the damped factors are
decomposed when k % inv_update_steps == 0; every step is preconditioned with the latest
decomposition.

Damping (Martens & Grosse 2015, §6.3, the factored Tikhonov form): λ is split as
γ_A = π √λ, γ_S = √λ / π with π = √((tr A / dim A) / (tr S / dim S)), each at least
``min_damping``; per expert for expert units. KL clipping (kfac-pytorch): all
preconditioned gradients are scaled by ν = min(1, √(kl_clip / |lr² Σ ĝ·g|)).

Decompositions are computed, kept and applied in ``inverse_dtype`` (fp64 by default): an
expert that saw fewer rows than its width has a rank-deficient factor, and with small
damping fp32 rounding of the preconditioned gradient reaches 1e-5 of its largest entry
(measured on the tiny model); fp32 is faster and halves the decompositions' memory. The
factors themselves are accumulated and averaged in fp32.

Same-sized factors are decomposed together in one batched call (an MoE layer's E experts
always are), which is also the unit of work a multi-rank owner will take.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable

import torch
from torch import nn

from koda.errors import KodaError
from koda.optim.config import KFACConfig
from koda.optim.layers import Unit, register


class ParamGrads:
    """``grads`` for a plain (unpartitioned) module: its parameters' ``.grad``."""

    def __init__(self, model: nn.Module):
        self._params = dict(model.named_parameters())

    def get(self, name: str) -> torch.Tensor:
        grad = self._params[name].grad
        if grad is None:
            raise KodaError(f"kfac: parameter {name} has no gradient (call after backward)")
        return grad

    def set(self, name: str, value: torch.Tensor) -> None:
        self._params[name].grad.copy_(value)


class KFACPreconditioner:
    """K-FAC over the selected layers of `model`; ``step(grads)`` once per optimizer step.

    lr: the step's learning rate, or a function returning it (KL clipping needs it).
    """

    def __init__(self, model: nn.Module, config: KFACConfig, lr: float | Callable[[], float] = 1.0):
        self.config = config
        self._lr = lr if callable(lr) else (lambda: float(lr))
        self._dtype = getattr(torch, config.inverse_dtype)
        self.steps = 0
        self.last_kl_scale = 1.0
        self.units, self._handles = register(model, config.selects, self._capturing)
        if not self.units:
            raise KodaError("kfac: no layer selected (optimizer.kfac.include / skip match no Linear or experts)")
        names = [u.name for u in self.units]
        if len(set(names)) != len(names):
            raise KodaError("kfac: two units share a name")

    # ------------------------------------------------------------------ schedule
    def _capturing(self) -> bool:
        return self.steps % self.config.factor_update_steps == 0

    def __call__(self, grads) -> None:
        self.step(grads)

    def step(self, grads) -> None:
        """Update factors / decompositions as scheduled, then precondition every unit's
        gradient in `grads` and KL-clip the update."""
        cfg = self.config
        if self.steps % cfg.factor_update_steps == 0:
            self.update_factors()
        if self.steps % cfg.inv_update_steps == 0:
            self.decompose()
        self.precondition(grads)
        self.steps += 1

    # ------------------------------------------------------------------ factors
    def update_factors(self) -> None:
        """Fold this step's sums into the running averages (per expert: only experts that got rows)."""
        decay = self.config.factor_decay
        self.reduce_statistics([u for u in self.units if u.a_sum is not None and u.s_sum is not None])
        for u in self.units:
            if u.a_sum is None or u.s_sum is None:
                u.clear()
                continue
            a = u.a_sum / u.rows.clamp(min=1).to(u.a_sum)[:, None, None]      # [E, a, a] mean
            s = u.s_sum * float(u.tokens)                                     # [E, s, s]
            got = (u.rows > 0).to(a.device)
            if u.A is None:
                u.A, u.S = torch.zeros_like(a), torch.zeros_like(s)
                u.seen = torch.zeros_like(got)
            first = (~u.seen)[:, None, None]
            mix_a = torch.where(first, a, decay * u.A + (1 - decay) * a)
            mix_s = torch.where(first, s, decay * u.S + (1 - decay) * s)
            u.A = torch.where(got[:, None, None], mix_a, u.A)
            u.S = torch.where(got[:, None, None], mix_s, u.S)
            u.seen = u.seen | got
            u.clear()

    def reduce_statistics(self, units: list[Unit]) -> None:
        """Where a multi-rank run must sum a_sum, s_sum, rows and tokens over the data-parallel
        group (an expert unit's over its expert-data-parallel group) before averaging; in one
        process there is nothing to sum."""

    # ------------------------------------------------------------------ decomposition
    def damping(self, u: Unit) -> tuple[torch.Tensor, torch.Tensor]:
        """(γ_A, γ_S), each [E]: the π-corrected split of λ."""
        lam = math.sqrt(self.config.damping)
        mean_a = u.A.diagonal(dim1=1, dim2=2).sum(-1) / u.a_dim                # [E]
        mean_s = u.S.diagonal(dim1=1, dim2=2).sum(-1) / u.s_dim
        ok = (mean_a > 0) & (mean_s > 0)
        pi = torch.where(ok, (mean_a / torch.where(ok, mean_s, 1.0)).sqrt(), torch.ones_like(mean_a))
        floor = self.config.min_damping
        return (pi * lam).clamp(min=floor), (lam / pi).clamp(min=floor)

    def decompose(self, units: list[Unit] | None = None) -> None:
        """Eigendecompose (or invert) the damped factors of `units` (default: all), same sizes batched."""
        ready = [u for u in (self.units if units is None else units) if u.A is not None]
        dtype = self._dtype
        groups: dict[int, list[tuple[Unit, str, torch.Tensor]]] = defaultdict(list)
        for u in ready:
            gamma_a, gamma_s = self.damping(u)
            u.decomposition = {"gamma_a": gamma_a.to(dtype), "gamma_s": gamma_s.to(dtype)}
            groups[u.a_dim].append((u, "a", u.A))
            groups[u.s_dim].append((u, "s", u.S))
        for items in groups.values():
            stacked = torch.cat([m for _, _, m in items]).to(dtype)             # [sum E, d, d]
            if self.config.inverse == "eigen":
                values, vectors = torch.linalg.eigh(stacked)
                results = [{"d": values.clamp(min=0).to(dtype), "q": vectors.to(dtype)}]
            else:
                gammas = torch.cat([u.decomposition[f"gamma_{side}"] for u, side, _ in items])
                eye = torch.eye(stacked.shape[-1], dtype=stacked.dtype, device=stacked.device)
                damped = stacked + gammas[:, None, None] * eye
                results = [{"inv": torch.cholesky_inverse(torch.linalg.cholesky(damped)).to(dtype)}]
            start = 0
            for u, side, m in items:
                n = m.shape[0]
                for key, value in results[0].items():
                    u.decomposition[f"{key}_{side}"] = value[start:start + n]
                start += n

    # ------------------------------------------------------------------ preconditioning
    def apply(self, u: Unit, g: torch.Tensor) -> torch.Tensor:
        """g: [E, s, a] -> the damped (S ⊗ A)⁻¹ g, [E, s, a], in ``inverse_dtype``."""
        dec = u.decomposition
        g = g.to(self._dtype)
        if self.config.inverse == "eigen":
            v = dec["q_s"].transpose(1, 2) @ g @ dec["q_a"]
            d_s = dec["d_s"] + dec["gamma_s"][:, None]                      # [E, s] damped eigenvalues
            d_a = dec["d_a"] + dec["gamma_a"][:, None]                      # [E, a]
            v = v / (d_s[:, :, None] * d_a[:, None, :])
            return dec["q_s"] @ v @ dec["q_a"].transpose(1, 2)
        return dec["inv_s"] @ g @ dec["inv_a"]

    def precondition(self, grads) -> None:
        """Rewrite every decomposed unit's gradient in `grads`, KL-clipped."""
        done = []
        vg = {False: 0.0, True: 0.0}                    # ĝ·g of dense and of expert units
        for u in self.units:
            if not u.decomposition:
                continue
            weight = self.read(grads, u)
            g = u.grad_view(weight, grads.get(u.bias) if u.bias else None)     # [E, s, a]
            p = self.apply(u, g)
            vg[u.expert_param] += float((p * g).sum())
            done.append((u, p, weight.dtype, weight.shape))
        nu = 1.0
        # lr 0 (a schedule's first warm-up step) moves nothing: there is no KL step to clip
        size = abs(self.total_vg(vg[False], vg[True]) * self._lr() ** 2)
        if self.config.kl_clip is not None and size > 0.0:
            nu = min(1.0, math.sqrt(self.config.kl_clip / size))
        self.last_kl_scale = nu
        for u, p, dtype, shape in done:
            weight, bias = u.split(p * nu)
            self.write(grads, u, weight.reshape(shape).to(dtype))
            if u.bias is not None:
                grads.set(u.bias, bias.to(dtype))

    def total_vg(self, dense: float, experts: float) -> float:
        """Σ ĝ·g over the whole model (a rank holding some experts adds the others' share)."""
        return dense + experts

    @staticmethod
    def read(grads, u: Unit) -> torch.Tensor:
        """The unit's weight gradient as its factors see it: an expert tensor's local experts
        where ``grads`` holds them by rank (``GradientAccess.get_experts``), else the whole."""
        if u.expert_param and hasattr(grads, "get_experts"):
            return grads.get_experts(u.weight).values
        return grads.get(u.weight)

    @staticmethod
    def write(grads, u: Unit, value: torch.Tensor) -> None:
        if u.expert_param and hasattr(grads, "set_experts"):
            grads.set_experts(u.weight, value)
        else:
            grads.set(u.weight, value)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {"steps": self.steps,
                "units": {u.name: {"A": u.A, "S": u.S, "seen": u.seen, **u.decomposition}
                          for u in self.units if u.A is not None}}

    def load_state_dict(self, state: dict) -> None:
        by_name = {u.name: u for u in self.units}
        unknown = sorted(set(state["units"]) - set(by_name))
        if unknown:
            raise KodaError(f"kfac state: unit {unknown[0]!r} is not a layer of this model")
        for name, values in state["units"].items():
            u = by_name[name]
            if tuple(values["A"].shape) != (u.experts, u.a_dim, u.a_dim):
                raise KodaError(f"kfac state: {name} A has shape {list(values['A'].shape)}, "
                                f"this model needs {[u.experts, u.a_dim, u.a_dim]}")
            u.A, u.S, u.seen = values["A"], values["S"], values["seen"]
            u.decomposition = {k: v for k, v in values.items() if k not in ("A", "S", "seen")}
        self.steps = int(state["steps"])

    def remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
