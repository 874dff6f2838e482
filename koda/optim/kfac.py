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
``min_damping``; per expert for expert units. Step size, one of: KL clipping (kfac-pytorch),
all preconditioned gradients scaled by ν = min(1, √(kl_clip / |lr² Σ ĝ·g|)); or
``update_rms``, each unit's (each expert's) preconditioned gradient rescaled to that RMS, the
K-FAC direction with Muon's per-matrix step size (layer-wise grafting): the damped inverse's
scale varies by orders of magnitude between layers, which one global lr cannot serve.

Decompositions: the damped inverses (S + γ_S I)⁻¹ and (A + γ_A I)⁻¹ are computed (from one
eigendecomposition, or a Cholesky factorisation) and kept as inverses, so a step's
preconditioning is two batched products per group of same-shaped units. ``inverse_dtype``:
``float64`` (exact to 1e-5 of the largest entry even for an expert that saw fewer rows than
its width, whose factor is rank-deficient), ``float32``, or ``auto``: fp32, and fp64 for the
units whose damped condition number fp32 cannot carry within 1e-3 (``settle``). The factors
themselves are accumulated and averaged in fp32.

Clipping: with ``clip`` > 0 (a run with ``update_rms``, whose rescaled steps DeepSpeed's
clipping after the transform would shrink by a norm fixed by construction) the raw gradients
are clipped before preconditioning (``koda.optim.clipping``), as Muon does.

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
from koda.optim.clipping import RawGradientClip
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

    lr: the step's learning rate, or a function returning it (KL clipping needs it); clip: the
    raw gradients' clipping norm (0: none here; DeepSpeed's clipping, if any, acts after).
    """

    def __init__(self, model: nn.Module, config: KFACConfig, lr: float | Callable[[], float] = 1.0,
                 clip: float = 0.0):
        self.config = config
        self.clipping = RawGradientClip([n for n, p in model.named_parameters() if p.requires_grad], clip)
        self._lr = lr if callable(lr) else (lambda: float(lr))
        # decompositions in fp64 for "float64"; in fp32 for "float32" and first for "auto", which
        # redoes in fp64 the units whose conditioning fp32 cannot carry
        self._compute_dtype = torch.float64 if config.inverse_dtype == "float64" else torch.float32
        self._stacks = None
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
        if self.clipping.clip > 0:
            self.clipping.scale(grads, self.clipping.names, self.clipping.coefficient(grads))
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
        """Damped inverses of the factors of `units` (default: all), then each unit's apply dtype."""
        ready = [u for u in (self.units if units is None else units) if u.A is not None]
        self.factorise(ready)
        self.refine(ready)
        self.settle(ready)

    def refine(self, units: list[Unit]) -> None:
        """``inverse_dtype: auto``: factorise again in fp64 the units whose fp32 condition number
        is beyond what fp32 carries (``apply_dtype``)."""
        if self.config.inverse_dtype == "auto":
            self.factorise([u for u in units if self.apply_dtype(float(u.decomposition["cond"])) == torch.float64],
                           torch.float64)

    def factorise(self, units: list[Unit], dtype: torch.dtype | None = None) -> None:
        """(A + γ_A I)⁻¹ and (S + γ_S I)⁻¹ of `units` in the compute dtype, same sizes batched.

        Eigen: Q diag(1 / (max(d, 0) + γ)) Qᵀ from one eigendecomposition (negative rounding
        eigenvalues of a rank-deficient factor clamped to 0), which is exactly the factored
        Tikhonov form (S ⊗ A + damping)⁻¹ of the eigenbasis update, applied as two products.
        ``cond`` [1]: the larger damped condition number of the two factors, over the experts."""
        dtype = dtype or self._compute_dtype
        groups: dict[int, list[tuple[Unit, str, torch.Tensor, torch.Tensor]]] = defaultdict(list)
        for u in units:
            gamma_a, gamma_s = self.damping(u)
            u.decomposition = {"gamma_a": gamma_a.to(dtype), "gamma_s": gamma_s.to(dtype)}
            groups[u.a_dim].append((u, "a", u.A, gamma_a))
            groups[u.s_dim].append((u, "s", u.S, gamma_s))
        conds: dict[int, list[torch.Tensor]] = defaultdict(list)
        for items in groups.values():
            stacked = torch.cat([m for _, _, m, _ in items]).to(dtype)          # [sum E, d, d]
            gammas = torch.cat([g for _, _, _, g in items]).to(dtype)           # [sum E]
            if self.config.inverse == "eigen":
                values, vectors = torch.linalg.eigh(stacked)
                damped = values.clamp(min=0) + gammas[:, None]                  # [sum E, d]
                inverse = (vectors / damped[:, None, :]) @ vectors.transpose(1, 2)
                cond = damped.amax(-1) / damped.amin(-1)
            else:
                eye = torch.eye(stacked.shape[-1], dtype=dtype, device=stacked.device)
                chol = torch.linalg.cholesky(stacked + gammas[:, None, None] * eye)
                inverse = torch.cholesky_inverse(chol)
                diag = chol.diagonal(dim1=1, dim2=2)
                cond = (diag.amax(-1) / diag.amin(-1)) ** 2                     # a lower bound
            start = 0
            for u, side, m, _ in items:
                n = m.shape[0]
                u.decomposition[f"inv_{side}"] = inverse[start:start + n]
                conds[id(u)].append(cond[start:start + n].amax())
                start += n
        for u in units:
            u.decomposition["cond"] = torch.stack(conds[id(u)]).amax().reshape(1)
        self._stacks = None

    def settle(self, units: list[Unit]) -> None:
        """Cast each unit's inverses to the dtype its gradients are preconditioned in: the
        configured one, or with ``inverse_dtype: auto`` fp32 where the damped condition
        number keeps fp32's relative error (cond x 2⁻²⁴) within ``AUTO_FP32_ERROR``, else fp64
        (those were factorised in fp64 by ``refine``)."""
        for u in units:
            dec = u.decomposition
            dtype = self.apply_dtype(float(dec["cond"]))
            for side in ("a", "s"):
                dec[f"inv_{side}"] = dec[f"inv_{side}"].to(dtype)
        self._stacks = None

    AUTO_FP32_ERROR = 1e-3

    def apply_dtype(self, cond: float) -> torch.dtype:
        if self.config.inverse_dtype != "auto":
            return getattr(torch, self.config.inverse_dtype)
        return torch.float32 if cond * 2.0 ** -24 <= self.AUTO_FP32_ERROR else torch.float64

    # ------------------------------------------------------------------ preconditioning
    def apply(self, u: Unit, g: torch.Tensor) -> torch.Tensor:
        """g: [E, s, a] -> the damped (S ⊗ A)⁻¹ g = (S + γ_S I)⁻¹ g (A + γ_A I)⁻¹, [E, s, a],
        in the unit's apply dtype."""
        dec = u.decomposition
        return dec["inv_s"] @ g.to(dec["inv_s"].dtype) @ dec["inv_a"]

    def stacks(self) -> list[tuple[list[Unit], torch.Tensor, torch.Tensor]]:
        """Decomposed units grouped by (expert?, s, a, dtype), each group's inverses stacked once
        per decomposition: [(units, inv_s [ΣE, s, s], inv_a [ΣE, a, a])]; one batched product
        per group instead of one per unit."""
        if self._stacks is None:
            groups: dict[tuple, list[Unit]] = defaultdict(list)
            for u in self.units:
                if u.decomposition:
                    groups[(u.expert_param, u.s_dim, u.a_dim, u.decomposition["inv_s"].dtype)].append(u)
            self._stacks = [(units, torch.cat([u.decomposition["inv_s"] for u in units]),
                             torch.cat([u.decomposition["inv_a"] for u in units])) for units in groups.values()]
        return self._stacks

    def precondition(self, grads) -> None:
        """Rewrite every decomposed unit's gradient in `grads`, KL-clipped."""
        done = []
        vg = {False: 0.0, True: 0.0}                    # ĝ·g of dense and of expert units
        for units, inv_s, inv_a in self.stacks():
            weights = [self.read(grads, u) for u in units]
            g = torch.cat([u.grad_view(w, grads.get(u.bias) if u.bias else None)
                           for u, w in zip(units, weights, strict=True)])          # [ΣE, s, a] fp32
            p = inv_s @ g.to(inv_s.dtype) @ inv_a
            if self.config.update_rms is not None:        # per unit and expert: [ΣE, 1, 1]
                rms = p.square().mean(dim=(1, 2), keepdim=True).sqrt()
                p = p * (self.config.update_rms / rms.clamp(min=torch.finfo(rms.dtype).tiny))
            vg[units[0].expert_param] += float((p * g).sum())
            done.append((units, weights, p))
        nu = 1.0
        # lr 0 (a schedule's first warm-up step) moves nothing: there is no KL step to clip
        size = abs(self.total_vg(vg[False], vg[True]) * self._lr() ** 2)
        if self.config.kl_clip is not None and size > 0.0:
            nu = min(1.0, math.sqrt(self.config.kl_clip / size))
        self.last_kl_scale = nu
        halves: dict[str, tuple[Unit, torch.Tensor]] = {}      # weights split into row units
        for units, weights, p in done:
            for u, weight, part in zip(units, weights, (p * nu).split([u.experts for u in units]), strict=True):
                w, bias = u.split(part)
                if u.out_rows is not None:
                    full = halves.setdefault(u.weight, (u, weight.clone()))[1]
                    full[:, slice(*u.out_rows)] = w.to(weight.dtype)
                    continue
                self.write(grads, u, w.reshape(weight.shape).to(weight.dtype))
                if u.bias is not None:
                    grads.set(u.bias, bias.to(weight.dtype))
        for u, full in halves.values():
            self.write(grads, u, full)

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
        state = {**state, "units": _split_fused_gate_up(state["units"], by_name)}
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
            if "q_a" in u.decomposition:          # written before the inverses were kept
                u.decomposition = _inverses_of_eigenbases(u.decomposition)
        self.steps = int(state["steps"])
        self._stacks = None
        self.decompose([by_name[n] for n in state["units"] if not by_name[n].decomposition])

    def remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def _split_fused_gate_up(units: dict[str, dict], by_name: dict[str, Unit]) -> dict[str, dict]:
    """An older checkpoint's fused ``gate_up_proj`` units as the ``.gate`` and ``.up`` units
    kept now: A shared, S's two diagonal blocks; their inverses are recomputed on load."""
    out = {}
    for name, values in units.items():
        if name in by_name or f"{name}.gate" not in by_name:
            out[name] = values
            continue
        half = values["S"].shape[-1] // 2
        for part, rows in (("gate", slice(0, half)), ("up", slice(half, 2 * half))):
            out[f"{name}.{part}"] = {"A": values["A"], "S": values["S"][:, rows, rows].contiguous(),
                                     "seen": values["seen"]}
    return out


def _inverses_of_eigenbases(dec: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An older checkpoint's eigenbases (q, d per side) as the damped inverses kept now."""
    out = {"gamma_a": dec["gamma_a"], "gamma_s": dec["gamma_s"]}
    conds = []
    for side in ("a", "s"):
        q, damped = dec[f"q_{side}"], dec[f"d_{side}"] + dec[f"gamma_{side}"][:, None]
        out[f"inv_{side}"] = (q / damped[:, None, :]) @ q.transpose(1, 2)
        conds.append((damped.amax(-1) / damped.amin(-1)).amax())
    out["cond"] = torch.stack(conds).amax().reshape(1)
    return out
