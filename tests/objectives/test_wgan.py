import pytest
import torch

from koda.objectives.gumbel import gumbel_softmax
from koda.objectives.wgan import critic_loss, generator_loss, gradient_penalty


def test_gradient_penalty_linear_critic_is_exact():
    """D(x) = <w, x>: grad norm is |w| everywhere, so GP = (|w| - 1)^2 and dGP/dw is known."""
    torch.manual_seed(0)
    w = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    real, fake = torch.randn(5, 3, 4, dtype=torch.float64), torch.randn(5, 3, 4, dtype=torch.float64)
    gp, norms = gradient_penalty(lambda x: (x * w).sum(dim=(1, 2)), real, fake)
    n = w.detach().norm()
    torch.testing.assert_close(norms, n.expand(5))
    torch.testing.assert_close(gp.detach(), (n - 1) ** 2)
    gp.backward()
    torch.testing.assert_close(w.grad, 2 * (n - 1) * w.detach() / n)


def test_gradient_penalty_matches_autograd_on_nonlinear_critic():
    torch.manual_seed(1)
    nn = torch.nn
    net = nn.Sequential(nn.Flatten(), nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 1)).double()
    real, fake = torch.randn(4, 2, 3, dtype=torch.float64), torch.randn(4, 2, 3, dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    gp, _ = gradient_penalty(lambda x: net(x).squeeze(-1), real, fake, generator=g)
    eps = torch.rand(4, 1, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    ref = 0.0
    for i in range(4):  # one sample at a time, by the definition
        x = (eps[i] * real[i] + (1 - eps[i]) * fake[i]).unsqueeze(0).requires_grad_(True)
        (gi,) = torch.autograd.grad(net(x).sum(), x)
        ref += (gi.norm() - 1) ** 2 / 4
    torch.testing.assert_close(gp.detach(), ref)


def test_critic_and_generator_terms():
    real, fake = torch.tensor([2.0, 4.0]), torch.tensor([1.0, -1.0])
    assert critic_loss(real, fake).item() == pytest.approx(-(3.0 - 0.0))
    assert generator_loss(fake).item() == pytest.approx(0.0)


def test_gumbel_softmax_straight_through():
    logits = torch.randn(3, 5, requires_grad=True)
    y = gumbel_softmax(logits, tau=0.5, hard=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(y.detach().sum(-1), torch.ones(3))
    assert set(y.detach().unique().tolist()) <= {0.0, 1.0}
    (y * torch.arange(5.0)).sum().backward()
    assert logits.grad.abs().sum() > 0          # the soft sample's gradient passes through


def test_gumbel_argmax_follows_the_softmax():
    logits = torch.tensor([1.0, 0.0, -1.0, 2.0]).expand(20000, 4)
    y = gumbel_softmax(logits, tau=1.0, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(y.argmax(-1), minlength=4).float() / 20000
    torch.testing.assert_close(freq, torch.softmax(logits[0], -1), atol=0.015, rtol=0)
