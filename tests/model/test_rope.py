import torch

from koda.model.rope import apply_rope, rope_angles


def _rotate(x, positions, theta=10000.0):
    cos, sin = rope_angles(positions, x.shape[-1], theta)
    return apply_rope(x, cos, sin)


def test_scores_depend_only_on_relative_position():
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 1, 32), torch.randn(1, 1, 1, 32)

    def score(i, j):
        return (_rotate(q, torch.tensor([[i]])) * _rotate(k, torch.tensor([[j]]))).sum().item()

    assert abs(score(3, 1) - score(103, 101)) < 1e-4
    assert abs(score(7, 7) - score(0, 0)) < 1e-4
    assert abs(score(5, 1) - score(5, 2)) > 1e-3      # and do depend on the offset


def test_rotation_preserves_norm_and_position_zero_is_identity():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 16)
    positions = torch.arange(5).expand(2, 5)
    rotated = _rotate(x, positions)
    torch.testing.assert_close(rotated.norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(rotated[:, :, 0], x[:, :, 0])


def test_angles_are_exact_at_large_positions_in_bf16_models():
    # computed in fp32 whatever the model dtype: position 4000 and 4001 must differ
    cos, _ = rope_angles(torch.tensor([[4000, 4001]]), 64, 10000.0)
    assert cos.dtype == torch.float32
    assert not torch.equal(cos[0, 0, 0], cos[0, 0, 1])
