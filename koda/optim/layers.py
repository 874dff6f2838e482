"""K-FAC units and the hooks that feed them, per layer type.

A unit is one Kronecker-factored weight: a Linear's weight (with its bias as an extra input
column), or one expert tensor whose E experts are factored separately; KODA's fused
[gate; up] expert tensor is two units (its two row halves), as AutoEP's w1 and w3 are. Every unit
holds its statistics with a leading expert axis (E = 1 for a Linear), so the preconditioner
treats both kinds alike and batches same-sized factors.

Hooks: a forward hook records the layer's input (or, for experts, the routed rows), and a
tensor hook on the output records the output gradient in backward; a hook on the output
tensor rather than a module backward hook keeps working when an in-place op follows.
Hooks record only while ``capture`` is on (the preconditioner turns it on for the steps
that update factors) and only under autograd, so evaluation and generation cost nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from koda.errors import KodaError
from koda.optim.factors import expert_statistics, outer_sum, with_bias_column


@dataclass
class Unit:
    """One factored weight. Gradient view: [E, s, a] (a includes the bias column)."""
    name: str
    weight: str                        # parameter name (model.named_parameters())
    bias: str | None
    experts: int                       # E; 1 for a Linear
    a_dim: int
    s_dim: int
    expert_param: bool = False         # weight is [E, s, a] (no reshaping, no bias)
    out_rows: tuple[int, int] | None = None   # this unit's rows [lo, hi) of the weight's output axis
    # this step's sums (across micro-batches), fp32
    a_sum: torch.Tensor | None = None  # [E, a, a]
    s_sum: torch.Tensor | None = None  # [E, s, s]
    rows: torch.Tensor | None = None   # [E] rows that reached each expert (A's normaliser)
    tokens: int = 0                    # rows of the whole layer (S's N)
    # running averages and decomposition
    A: torch.Tensor | None = None      # [E, a, a]
    S: torch.Tensor | None = None      # [E, s, s]
    seen: torch.Tensor | None = None   # [E] bool: the expert's averages hold data
    decomposition: dict[str, torch.Tensor] = field(default_factory=dict)

    def add(self, a_sum: torch.Tensor | None = None, s_sum: torch.Tensor | None = None,
            rows: torch.Tensor | None = None, tokens: int = 0) -> None:
        if a_sum is not None:
            self.a_sum = a_sum if self.a_sum is None else self.a_sum + a_sum
            self.rows = rows if self.rows is None else self.rows + rows
            self.tokens += tokens
        if s_sum is not None:
            self.s_sum = s_sum if self.s_sum is None else self.s_sum + s_sum

    def clear(self) -> None:
        self.a_sum = self.s_sum = self.rows = None
        self.tokens = 0

    def grad_view(self, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """Parameter gradients -> [E, s, a] fp32."""
        if self.expert_param:
            return weight.float() if self.out_rows is None else weight[:, slice(*self.out_rows)].float()
        g = weight.float().reshape(self.s_dim, -1)
        if bias is not None:
            g = torch.cat([g, bias.float()[:, None]], dim=1)
        return g[None]

    def split(self, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """[E, s, a] -> (weight gradient, bias gradient or None) in parameter layout."""
        if self.expert_param:
            return g, None
        g = g[0]
        return (g[:, :-1], g[:, -1]) if self.bias is not None else (g, None)


Capture = Callable[[], bool]


def _active(capture: Capture) -> bool:
    return capture() and torch.is_grad_enabled()


def hook_linear(name: str, module: nn.Linear, capture: Capture) -> tuple[list[Unit], list]:
    """A Linear on inputs [..., in]: A over `in` (+1 with a bias), S over `out`."""
    bias = module.bias is not None
    unit = Unit(name, f"{name}.weight", f"{name}.bias" if bias else None, 1,
                module.in_features + bias, module.out_features)

    def forward(mod, inputs, output):
        if not _active(capture):
            return
        a = inputs[0].detach().reshape(-1, module.in_features)     # [n, in]
        n = a.shape[0]
        unit.add(a_sum=outer_sum(with_bias_column(a) if bias else a)[None],
                 rows=torch.tensor([n], device=a.device), tokens=n)
        output.register_hook(lambda g: unit.add(s_sum=outer_sum(g.reshape(-1, module.out_features))[None]))

    return [unit], [module.register_forward_hook(forward)]


def hook_swiglu_experts(name: str, module: nn.Module, capture: Capture) -> tuple[list[Unit], list]:
    """KODA's ``SwiGLUExperts`` (gate_up_proj [E, 2F, D], down_proj [E, D, F]).

    Three units, as AutoEP's w1, w3, w2: the gate rows [0, F) and the up rows [F, 2F) of
    ``gate_up_proj`` are factored apart (S block-diagonal: two F x F factors instead of one
    2F x 2F, which halves the preconditioning products of the widest factor and quarters its
    decomposition), then ``down_proj``.
    Its forward gets (x [T, D], weights [T, k], experts [T, k]) and returns the weighted sum
    [T, D]. The gradient of expert e's own output row for a token copy is the routing
    weight times the gradient of the block output at that token; the hidden rows are
    recomputed from x (see ``factors.swiglu_rows``). N for S is T, the block's tokens.
    """
    E, F2, D = module.gate_up_proj.shape
    F_ = F2 // 2
    weight = f"{name}.gate_up_proj"
    gate = Unit(f"{weight}.gate", weight, None, E, D, F_, expert_param=True, out_rows=(0, F_))
    up = Unit(f"{weight}.up", weight, None, E, D, F_, expert_param=True, out_rows=(F_, F2))
    down = Unit(f"{name}.down_proj", f"{name}.down_proj", None, E, F_, D, expert_param=True)

    def forward(mod, inputs, output):
        if not _active(capture):
            return
        x, weights, experts = (t.detach() for t in inputs)
        top_k = experts.shape[1]
        flat = experts.reshape(-1)                                   # [T*k]
        order = torch.argsort(flat, stable=True)
        counts = torch.bincount(flat, minlength=E)
        token = order // top_k
        rows = x.index_select(0, token)                              # [T*k, D] grouped by expert
        scale = weights.reshape(-1).index_select(0, order)[:, None].float()   # [T*k, 1]

        def backward(g):                                             # g: [T, D]
            g_out = g.index_select(0, token).float() * scale         # [T*k, D]
            wgu = module.gate_up_proj.detach()
            stats = expert_statistics(rows, counts.tolist(), g_out, wgu[:, :F_], wgu[:, F_:],
                                      module.down_proj.detach())
            for unit, a_key, s_key in ((gate, "a_in", "s_gate"), (up, "a_in", "s_up"), (down, "a_mid", "s_down")):
                unit.add(a_sum=stats[a_key], s_sum=stats[s_key], rows=counts, tokens=x.shape[0])

        output.register_hook(backward)

    return [gate, up, down], [module.register_forward_hook(forward)]


def hook_grouped_experts(name: str, module: nn.Module, parent: nn.Module, capture: Capture) -> tuple[list[Unit], list]:
    """DeepSpeed AutoEP's ``GroupedExperts`` (w1, w3 [E_local, F, D], w2 [E_local, D, F]),
    recognised by class name (this package does not import DeepSpeed).

    Its forward gets x [N_pad, D], rows grouped by local expert, and counts [E_local] that
    include each group's alignment padding; padding rows (inside the groups and past
    sum(counts)) are zero rows with zero gradient, so they add nothing to the sums, and the
    rows that count for A's mean are the non-zero ones. Router
    scores are applied after the experts (Mixtral's ``post`` mode; ``pre`` is refused), so
    the output gradient is that of each expert's own output. N for S is the parent layer's
    token count [B*S]. The weights are copied in a forward hook placed before ZeRO-3's
    release hook (``prepend``): its backward-time copy may be freed. One-process only so far.
    """
    if getattr(parent, "score_apply", "post") != "post":
        raise KodaError(f"kfac: {name}: router scores applied before the experts are not supported")
    E, F_, D = getattr(module.w1, "ds_shape", module.w1.shape)        # ZeRO-3 empties .shape
    units = {w: Unit(f"{name}.{w}", f"{name}.{w}", None, E, a, s, expert_param=True)
             for w, a, s in (("w1", D, F_), ("w3", D, F_), ("w2", F_, D))}
    tokens = {"n": 0}

    def parent_pre(mod, inputs):
        tokens["n"] = inputs[0].numel() // inputs[0].shape[-1]

    def forward(mod, inputs, output):
        if not _active(capture):
            return
        x, counts = inputs[0].detach(), [int(c) for c in inputs[1].tolist()]
        n_real, n_tokens = sum(counts), tokens["n"]
        w1, w3, w2 = (w.detach().clone() for w in (module.w1, module.w3, module.w2))

        def backward(g):                                               # g: [N_pad, D]
            stats = expert_statistics(x[:n_real], counts, g[:n_real], w1, w3, w2)
            real = (x[:n_real] != 0).any(dim=-1).long()                # [n_real] 0 for padding rows
            rows = torch.stack([part.sum() for part in real.split(counts)])   # [E_local]
            for w, a_key, s_key in (("w1", "a_in", "s_gate"), ("w3", "a_in", "s_up"), ("w2", "a_mid", "s_down")):
                units[w].add(a_sum=stats[a_key], s_sum=stats[s_key], rows=rows, tokens=n_tokens)

        output.register_hook(backward)

    handles = [parent.register_forward_pre_hook(parent_pre), module.register_forward_hook(forward, prepend=True)]
    return list(units.values()), handles


def register(model: nn.Module, selects: Callable[[str], bool], capture: Capture) -> tuple[list[Unit], list]:
    """Hook every selected module K-FAC knows; returns (units, hook handles)."""
    from koda.model.moe import SwiGLUExperts

    units, handles = [], []
    for name, module in model.named_modules():
        if not selects(name):
            continue
        if isinstance(module, nn.Linear) and module.weight.requires_grad:
            made = hook_linear(name, module, capture)
        elif isinstance(module, SwiGLUExperts):
            made = hook_swiglu_experts(name, module, capture)
        elif type(module).__name__ == "GroupedExperts":
            parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
            made = hook_grouped_experts(name, module, parent, capture)
        else:
            continue
        units += made[0]
        handles += made[1]
    return units, handles


def preconditioned_parameters(model: nn.Module, selects: Callable[[str], bool]) -> set[str]:
    """Names of the parameters ``register`` would factor (weights and biases of the hooked
    layers): the ones K-FAC's step owns, the rest may take another rule."""
    from koda.model.moe import SwiGLUExperts

    names = set()
    for name, module in model.named_modules():
        if not selects(name):
            continue
        if (isinstance(module, nn.Linear) and module.weight.requires_grad) or isinstance(module, SwiGLUExperts) \
                or type(module).__name__ == "GroupedExperts":
            names |= {f"{name}.{n}" if name else n for n, _ in module.named_parameters(recurse=False)}
    return names
