"""Per-layer K-FAC statistics: the sums that become A = E[a aᵀ] and S = E[g gᵀ].

Sequence dimensions follow the K-FAC-expand formulation (Eschenhagen et al., 2023): every
token position of every sequence is one row, as if the layer were applied to B*T
independent inputs. So a Linear layer seeing x [B, T, D_in] contributes B*T rows of a and
of g; A is their mean, and S is N times the sum of g gᵀ, where g is the gradient of the
(mean-reduced) loss and N the number of rows (equivalently: the mean of the per-row
gradients of the summed loss). This is curvlinops' empirical-Fisher KFAC-expand
convention, and the tests hold us to it.

Experts are factored one by one from the rows routed to them. For SwiGLU experts
out_e(x) = (silu(x W_gᵀ) * x W_uᵀ) W_dᵀ the inputs of W_d and the gradients of W_g/W_u's
outputs exist only inside the expert computation, so they are recomputed here from the
expert's input rows and the gradient of its output (``swiglu_rows``).

All statistics are accumulated in fp32 whatever the activation dtype (bf16 runs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def outer_sum(rows: torch.Tensor) -> torch.Tensor:
    """rows: [n, d] (any dtype) -> Σ_i r_i r_iᵀ [d, d] in fp32 (also inside a bf16 autocast
    region, where forward hooks run and a plain matmul would come back in bf16)."""
    rows = rows.float()
    with torch.autocast(rows.device.type, enabled=False):
        return rows.t() @ rows


def with_bias_column(a: torch.Tensor) -> torch.Tensor:
    """a: [n, d] -> [n, d + 1] with a column of ones, so the bias is factored with the weight."""
    return torch.cat([a, a.new_ones(a.shape[0], 1)], dim=1)


def swiglu_rows(x: torch.Tensor, w_gate: torch.Tensor, w_up: torch.Tensor, w_down: torch.Tensor,
                g_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One expert's hidden inputs and hidden-output gradients, recomputed in fp32.

    x: [n, D] rows routed to the expert; w_gate, w_up: [F, D]; w_down: [D, F];
    g_out: [n, D] gradient of the loss w.r.t. the expert's (unweighted) output rows.
    Returns (h [n, F] = the input of w_down, d_gate [n, F], d_up [n, F] = the gradients
    w.r.t. the outputs of w_gate and w_up).
    """
    x, g_out = x.float(), g_out.float()
    with torch.autocast(x.device.type, enabled=False):
        gate = x @ w_gate.float().t()                               # [n, F]
        up = x @ w_up.float().t()                                   # [n, F]
        dh = g_out @ w_down.float()                                 # [n, F]
    act = F.silu(gate)
    sig = torch.sigmoid(gate)
    dsilu = sig * (1 + gate * (1 - sig))                            # silu'(gate)
    return act * up, dh * up * dsilu, dh * act


def expert_statistics(x: torch.Tensor, counts: list[int], g_out: torch.Tensor, w_gate: torch.Tensor,
                      w_up: torch.Tensor, w_down: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-expert sums over grouped rows.

    x, g_out: [n, D], rows grouped by expert (counts[e] rows for expert e, in order, no
    padding); w_gate, w_up: [E, F, D]; w_down: [E, D, F].
    Returns fp32 sums: ``a_in`` [E, D, D] (input of w_gate/w_up), ``a_mid`` [E, F, F]
    (input of w_down), ``s_down`` [E, D, D], ``s_gate`` and ``s_up`` [E, F, F].
    """
    E, F_, D = w_gate.shape
    out = {"a_in": x.new_zeros(E, D, D, dtype=torch.float32),
           "a_mid": x.new_zeros(E, F_, F_, dtype=torch.float32),
           "s_down": x.new_zeros(E, D, D, dtype=torch.float32),
           "s_gate": x.new_zeros(E, F_, F_, dtype=torch.float32),
           "s_up": x.new_zeros(E, F_, F_, dtype=torch.float32)}
    start = 0
    for e, n in enumerate(counts):
        if n:
            rows, grads = x[start:start + n], g_out[start:start + n]
            h, d_gate, d_up = swiglu_rows(rows, w_gate[e], w_up[e], w_down[e], grads)
            out["a_in"][e] = outer_sum(rows)
            out["a_mid"][e] = outer_sum(h)
            out["s_down"][e] = outer_sum(grads)
            out["s_gate"][e] = outer_sum(d_gate)
            out["s_up"][e] = outer_sum(d_up)
        start += n
    return out
