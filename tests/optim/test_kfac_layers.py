"""A Linear's K-FAC unit written out by hand: the bias is an appended input column of ones.

No curvlinops needed (tests/optim/test_kfac_reference.py compares against it where installed).
"""

import torch
from torch import nn

from koda.optim import KFACPreconditioner, ParamGrads
from tests.helpers.kfac_settings import textbook

DAMPING = 1e-3
TOL = {"rtol": 1e-5, "atol": 1e-6}  # the factors are summed in fp32 (factors.outer_sum)


def _one_step(bias: bool):
    """One K-FAC step of Linear(3 -> 2) on x [2, 4, 3] with loss mean(out²): the layer, its inputs
    a [8, 3], output gradients g [8, 2], raw parameter gradients and its unit."""
    torch.manual_seed(0)
    layer = nn.Linear(3, 2, bias=bias).double()
    model = nn.Sequential(layer)                                      # the unit is named by its path
    x = torch.randn(2, 4, 3, dtype=torch.float64)                     # [B, T, in]
    pre = KFACPreconditioner(model, textbook(damping=DAMPING, kl_clip=None, inv_update_steps=1,
                                               inverse_dtype="float64"))
    out = layer(x)                                                    # [B, T, out]
    out.retain_grad()
    out.pow(2).mean().backward()
    raw = [p.grad.clone() for p in layer.parameters()]
    pre.step(ParamGrads(model))
    return layer, x.reshape(-1, 3), out.grad.reshape(-1, 2), raw, pre.units[0]


def test_linear_activation_factor_appends_a_ones_column_for_the_bias():
    layer, a, g, raw, unit = _one_step(bias=True)
    n = a.shape[0]
    a1 = torch.cat([a, torch.ones(n, 1, dtype=a.dtype)], dim=1)      # [n, in + 1]: [x, 1]
    assert unit.a_dim == 4
    torch.testing.assert_close(unit.A[0].double(), a1.t() @ a1 / n, **TOL)
    torch.testing.assert_close(unit.S[0].double(), n * g.t() @ g, **TOL)

    # the preconditioned [weight | bias] is the damped solve on those factors, bias last
    G = torch.cat([raw[0], raw[1][:, None]], dim=1)                  # [out, in + 1]
    A, S = a1.t() @ a1 / n, n * g.t() @ g
    pi = ((A.trace() / 4) / (S.trace() / 2)).sqrt()
    lam = DAMPING ** 0.5
    want = torch.linalg.solve(S + lam / pi * torch.eye(2, dtype=S.dtype), G) @ \
        torch.linalg.inv(A + pi * lam * torch.eye(4, dtype=A.dtype))
    torch.testing.assert_close(layer.weight.grad, want[:, :3], **TOL)
    torch.testing.assert_close(layer.bias.grad, want[:, 3], **TOL)


def test_linear_without_bias_has_no_extra_column():
    _, a, _, _, unit = _one_step(bias=False)
    assert unit.a_dim == 3 and unit.bias is None
    torch.testing.assert_close(unit.A[0].double(), a.t() @ a / a.shape[0], **TOL)
