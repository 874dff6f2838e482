import re

import torch
import torch.nn.functional as F

from koda.model import KodaForCausalLM
from koda.model.moe import MoEBlock, route
from koda.objectives import switch_balance_loss
from tests.helpers.tiny import TINY


def test_route_picks_top_k_and_renormalises():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0], [5.0, 0.0, 0.0, 4.0]])
    weights, experts = route(logits, 2)
    assert [sorted(r) for r in experts.tolist()] == [[1, 3], [0, 3]]
    torch.testing.assert_close(weights.sum(-1), torch.ones(2))
    probs = F.softmax(logits, -1)
    expected = probs[0, [1, 3]] / probs[0, [1, 3]].sum()
    torch.testing.assert_close(weights[0].sort(descending=True).values, expected.sort(descending=True).values)


def test_block_equals_a_per_token_reference():
    torch.manual_seed(0)
    block = MoEBlock(TINY)
    for p in block.parameters():
        torch.nn.init.normal_(p, std=0.2)
    x = torch.randn(3, 5, TINY.d_model)
    out = block(x)
    flat = x.reshape(-1, TINY.d_model)
    weights, experts = route(block.gate(flat), TINY.top_k)
    ref = torch.zeros_like(flat)
    for t in range(flat.shape[0]):
        for w, e in zip(weights[t], experts[t], strict=True):
            gate, up = (block.experts.gate_up_proj[e] @ flat[t]).chunk(2)
            ref[t] += w * (block.experts.down_proj[e] @ (F.silu(gate) * up))
    torch.testing.assert_close(out.reshape(-1, TINY.d_model), ref, atol=1e-5, rtol=1e-5)


def test_autoep_naming_contract():
    """The names and shapes DeepSpeed AutoEP detects (see koda/model/moe.py)."""
    model = KodaForCausalLM(TINY)
    pattern = re.compile(r"model\.layers\.\d+\.mlp")
    blocks = [(n, m) for n, m in model.named_modules() if pattern.fullmatch(n)]
    assert len(blocks) == TINY.n_layers
    for _, block in blocks:
        assert isinstance(block.gate, torch.nn.Linear) and block.gate.bias is None
        assert block.gate.weight.shape == (TINY.n_experts, TINY.d_model)
        assert block.experts.gate_up_proj.shape == (TINY.n_experts, 2 * TINY.ffn_hidden, TINY.d_model)
        assert block.experts.down_proj.shape == (TINY.n_experts, TINY.d_model, TINY.ffn_hidden)
    assert not hasattr(model, "config")   # AutoEP would read it as a Hugging Face config


def test_dense_layers_interleave():
    model = KodaForCausalLM(TINY.replace(n_layers=4, moe_every=2))
    kinds = [type(layer.mlp).__name__ for layer in model.model.layers]
    assert kinds == ["DenseMLP", "MoEBlock", "DenseMLP", "MoEBlock"]


def test_switch_loss_is_one_when_uniform_and_large_when_collapsed():
    uniform = torch.zeros(1000, 4)
    uniform_loss, _ = switch_balance_loss(uniform + 1e-3 * torch.randn(1000, 4), 2)
    assert abs(uniform_loss.item() - 1.0) < 0.05
    collapsed = torch.tensor([[10.0, 9.0, 0.0, 0.0]]).repeat(100, 1)
    loss, counts = switch_balance_loss(collapsed, 2)
    assert counts.tolist() == [100, 100, 0, 0]
    assert loss.item() > 1.9      # E * (0.5 * p0 + 0.5 * p1) with p0 + p1 ~ 1 -> ~2


def test_switch_loss_gradient_pushes_probability_off_the_overloaded_expert():
    logits = torch.tensor([[3.0, 2.0, 0.0, 0.0]]).repeat(64, 1).requires_grad_()
    loss, _ = switch_balance_loss(logits, 2)
    loss.backward()
    assert logits.grad[:, 0].mean() > 0 and logits.grad[:, 2].mean() < 0
