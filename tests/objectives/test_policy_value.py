import math

import pytest
import torch

from koda.objectives.policy import kl_penalty, policy_loss, token_entropy
from koda.objectives.value import value_loss


def _case():
    ratios = torch.tensor([[1.5, 0.5, 1.1, 0.5]])
    adv = torch.tensor([[1.0, -1.0, 2.0, 1.0]])
    old = torch.tensor([[-1.0, -2.0, -0.5, -3.0]])
    new = (old + ratios.log()).requires_grad_(True)
    return new, old, adv


def test_ppo_clipped_loss_by_hand():
    new, old, adv = _case()
    out = policy_loss(new, old, adv, clip=0.2)
    # min(rA, clip(r)A): 1.2 (clipped), -0.8 (clipped), 2.2, 0.5 (pessimistic: unclipped)
    assert out.loss.item() == pytest.approx(-(1.2 - 0.8 + 2.2 + 0.5) / 4)
    assert out.clip_fraction.item() == pytest.approx(0.5)
    out.loss.backward()
    # clipped tokens have no gradient; the others -r A / N
    torch.testing.assert_close(new.grad, torch.tensor([[0.0, 0.0, -2.2 / 4, -0.5 / 4]]))


def test_a2c_when_clip_is_off_and_mask():
    new, old, adv = _case()
    mask = torch.tensor([[1, 1, 0, 1]])
    out = policy_loss(new, old, adv, mask, clip=None)
    assert out.loss.item() == pytest.approx(-(new[0, 0] * 1 - new[0, 1] * 1 + new[0, 3] * 1).item() / 3)
    out.loss.backward()
    torch.testing.assert_close(new.grad, torch.tensor([[-1 / 3, 1 / 3, 0.0, -1 / 3]]))


def test_approx_kl_is_k3():
    new, old, adv = _case()
    r = torch.tensor([1.5, 0.5, 1.1, 0.5])
    assert policy_loss(new, old, adv).approx_kl.item() == pytest.approx(((r - 1) - r.log()).mean().item())


def test_kl_penalty_k1_k3():
    lp, ref = torch.tensor([[-1.0, -2.0]]), torch.tensor([[-1.5, -1.0]])
    torch.testing.assert_close(kl_penalty(lp, ref, "k1"), torch.tensor([[0.5, -1.0]]))
    k3 = kl_penalty(lp, ref, "k3")
    torch.testing.assert_close(k3, torch.tensor([[math.exp(-0.5) - 1 + 0.5, math.exp(1.0) - 1 - 1.0]]))


def test_entropy_uniform_and_peaked():
    logits = torch.zeros(1, 2, 8)
    logits[0, 1, 0] = 1e4
    assert token_entropy(logits, torch.tensor([[1, 0]])).item() == pytest.approx(math.log(8))
    assert token_entropy(logits, torch.tensor([[0, 1]])).item() == pytest.approx(0.0, abs=1e-6)


def test_clipped_value_loss_by_hand():
    v = torch.tensor([[1.0, 0.0]], requires_grad=True)
    old, ret = torch.tensor([[0.5, 0.5]]), torch.tensor([[2.0, 0.6]])
    loss = value_loss(v, old, ret, clip=0.2)
    # token 1: max((1-2)^2, (0.7-2)^2) = 1.69 (clipped branch); token 2: max(0.36, 0.09) = 0.36
    assert loss.item() == pytest.approx(0.5 * (1.69 + 0.36) / 2)
    loss.backward()
    torch.testing.assert_close(v.grad, torch.tensor([[0.0, 0.5 * 2 * (0.0 - 0.6) / 2]]))
    assert value_loss(v, old, ret, clip=None).item() == pytest.approx(0.5 * (1.0 + 0.36) / 2)


def test_shape_mismatch_is_one_line():
    with pytest.raises(ValueError, match=r"old_logprobs has shape \(2, 3\)"):
        policy_loss(torch.zeros(2, 4), torch.zeros(2, 3), torch.zeros(2, 4))
