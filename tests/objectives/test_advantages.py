import numpy as np
import pytest
import torch

from koda.objectives.advantages import gae, group_advantages


def numpy_gae(rewards, values, mask, gamma, lam):
    """Reference: per sequence, GAE over the real tokens only (padding removed first)."""
    adv = np.zeros_like(values)
    for b in range(rewards.shape[0]):
        idx = np.nonzero(mask[b])[0]
        r, v = rewards[b, idx], values[b, idx]
        a, nxt_v, nxt_a = np.zeros(len(idx)), 0.0, 0.0
        for i in range(len(idx) - 1, -1, -1):
            delta = r[i] + gamma * nxt_v - v[i]
            a[i] = delta + gamma * lam * nxt_a
            nxt_v, nxt_a = v[i], a[i]
        adv[b, idx] = a
    return adv, (adv + values) * mask


def test_gae_matches_numpy_with_left_and_right_padding():
    rng = np.random.default_rng(0)
    B, T = 4, 9
    rewards, values = rng.normal(size=(B, T)), rng.normal(size=(B, T))
    mask = np.ones((B, T))
    mask[0, 6:] = 0            # right padding
    mask[1, :3] = 0            # left padding (prompt)
    mask[2, [2, 5]] = 0        # gaps
    mask[3, :] = 0             # empty completion
    for gamma, lam in [(1.0, 0.95), (0.9, 0.5), (0.99, 1.0), (1.0, 0.0)]:
        adv, ret = gae(torch.tensor(rewards), torch.tensor(values), torch.tensor(mask), gamma, lam)
        ref_adv, ref_ret = numpy_gae(rewards, values, mask, gamma, lam)
        np.testing.assert_allclose(adv.numpy(), ref_adv, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(ret.numpy(), ref_ret, rtol=1e-12, atol=1e-12)


def test_gae_lambda_one_gives_discounted_return_minus_value():
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.2, 0.4, 0.5]])
    adv, ret = gae(rewards, values, torch.ones(1, 3), gamma=0.5, lam=1.0)
    torch.testing.assert_close(ret, torch.tensor([[0.25, 0.5, 1.0]]))
    torch.testing.assert_close(adv, torch.tensor([[0.05, 0.1, 0.5]]))


def test_group_advantages_against_numpy():
    rng = np.random.default_rng(1)
    r = rng.normal(size=12)
    grpo = group_advantages(torch.tensor(r), 4, "grpo").numpy()
    g = r.reshape(3, 4)
    ref = (g - g.mean(1, keepdims=True)) / (g.std(1, ddof=1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(grpo, ref.reshape(-1), rtol=1e-10)
    rloo = group_advantages(torch.tensor(r), 4, "rloo").numpy()
    ref = np.array([[g[i, j] - np.delete(g[i], j).mean() for j in range(4)] for i in range(3)])
    np.testing.assert_allclose(rloo, ref.reshape(-1), rtol=1e-10)


def test_group_advantages_refuse_bad_groups():
    with pytest.raises(ValueError, match="divide"):
        group_advantages(torch.zeros(10), 4)
    with pytest.raises(ValueError, match="mode"):
        group_advantages(torch.zeros(8), 4, "ppo")


def test_token_rewards_put_the_score_on_the_last_completion_token():
    from koda.objectives.advantages import token_rewards

    mask = torch.tensor([[0, 1, 1, 0], [0, 0, 0, 0], [1, 0, 1, 1]], dtype=torch.bool)
    kl = torch.full((3, 4), 0.5)
    r = token_rewards(torch.tensor([2.0, 3.0, -1.0]), mask, kl, kl_coef=0.1)
    expected = torch.tensor([[0.0, -0.05, 2.0 - 0.05, 0.0], [0.0, 0.0, 0.0, 0.0], [-0.05, 0.0, -0.05, -1.05]])
    torch.testing.assert_close(r, expected)
