"""The four routers of ``model.router`` against hand computations on fixed logits."""

import pytest
import torch
import torch.nn.functional as F

from koda.errors import ConfigError
from koda.model import KodaForCausalLM
from koda.model.config import ModelConfig
from koda.model.moe import MoEBlock, hash_experts, route, route_gumbel, route_hash, route_switch
from tests.helpers.tiny import TINY

LOGITS = torch.tensor([[0.0, 3.0, 1.0, 2.0],
                       [5.0, 0.0, 0.0, 4.0],
                       [1.0, 1.5, -2.0, 0.5]])


def _model(router: str, top_k: int) -> KodaForCausalLM:
    torch.manual_seed(0)
    return KodaForCausalLM(TINY.replace(router=router, top_k=top_k))


def test_switch_weight_is_the_softmax_probability_not_renormalised():
    weights, experts = route_switch(LOGITS)
    assert experts.tolist() == [[1], [0], [1]]
    probs = F.softmax(LOGITS, -1)
    torch.testing.assert_close(weights[:, 0], probs[[0, 1, 2], [1, 0, 1]])
    assert (weights < 1).all()               # a renormalised top-1 would be exactly 1


def test_hash_is_the_documented_function_of_the_ids():
    ids = torch.tensor([0, 1, 2, 3, 7, 100, 511, 4095])
    expected = [((i * 2654435761) % 2**32 >> 16) % 4 for i in ids.tolist()]
    assert hash_experts(ids, 4).tolist() == expected
    assert len(set(expected)) > 1 and expected != [i % 4 for i in ids.tolist()]    # not a plain id mod E
    weights, experts = route_hash(ids, 4)
    assert experts[:, 0].tolist() == expected and weights.eq(1).all() and weights.shape == (8, 1)


def test_hash_block_ignores_the_hidden_state_and_has_no_gate():
    model = _model("hash", 1)
    block = model.model.layers[0].mlp
    assert not hasattr(block, "gate")
    ids = torch.randint(0, TINY.vocab_size, (2, 16), generator=torch.Generator().manual_seed(1))
    model(ids)
    first = block.routed_counts.clone()
    model.model.embed_tokens.weight.data.normal_()       # other hidden states, same ids
    model(ids)
    assert torch.equal(block.routed_counts, first)
    assert torch.equal(first, torch.bincount(hash_experts(ids.reshape(-1), TINY.n_experts), minlength=4))
    assert block.token_ids is None                       # set for the forward only
    with pytest.raises(ValueError, match="token ids"):
        block(torch.randn(1, 3, TINY.d_model))


def test_gumbel_differs_from_topk_in_training_and_equals_it_in_eval():
    logits = torch.randn(256, 4, generator=torch.Generator().manual_seed(0))
    plain_w, plain_e = route(logits, 2)
    eval_w, eval_e = route_gumbel(logits, 2, training=False)
    assert torch.equal(eval_w, plain_w) and torch.equal(eval_e, plain_e)
    torch.manual_seed(3)
    train_w, train_e = route_gumbel(logits, 2, training=True)
    assert not torch.equal(train_e.sort(-1).values, plain_e.sort(-1).values)
    # the weights are the clean probabilities of the sampled experts, renormalised
    probs = F.softmax(logits, -1).gather(-1, train_e)
    torch.testing.assert_close(train_w, probs / probs.sum(-1, keepdim=True))
    torch.manual_seed(3)
    assert torch.equal(route_gumbel(logits, 2, training=True)[1], train_e)       # the global RNG, seeded


def test_gumbel_block_follows_train_and_eval_mode():
    model = _model("topk_gumbel", 2)
    block = model.model.layers[0].mlp
    x = torch.randn(4, 32, TINY.d_model, generator=torch.Generator().manual_seed(2))
    block.eval()
    reference = _model("topk", 2).model.layers[0].mlp.eval()
    assert torch.equal(block(x), reference(x))           # same weights (same seed), same eval function
    block.train()
    torch.manual_seed(5)
    assert not torch.equal(block(x), reference(x))


def test_topk_block_is_unchanged():
    """topk: the block is route() on the gate then the experts, bit for bit; the model draws
    the same weights from the same seed and describes itself without the new field."""
    model = _model("topk", 2)
    block = model.model.layers[1].mlp
    x = torch.randn(3, 8, TINY.d_model, generator=torch.Generator().manual_seed(4))
    flat = x.reshape(-1, TINY.d_model)
    weights, experts = route(block.gate(flat), 2)
    assert torch.equal(block(x), block.experts(flat, weights, experts).view_as(x))
    assert "router" not in TINY.to_dict() and ModelConfig.from_dict(TINY.to_dict()) == TINY
    assert TINY.replace(router="hash", top_k=1).to_dict()["router"] == "hash"
    torch.manual_seed(0)
    other = KodaForCausalLM(ModelConfig.from_dict({**TINY.to_dict(), "router": "topk"}))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values(),
                                                 strict=True))


def test_switch_block_output_uses_the_probability_weight():
    model = _model("switch", 1)
    block = model.model.layers[0].mlp
    x = torch.randn(2, 5, TINY.d_model, generator=torch.Generator().manual_seed(6))
    flat = x.reshape(-1, TINY.d_model)
    probs = F.softmax(block.gate(flat).float(), -1)
    p, e = probs.max(-1)
    unit = block.experts(flat, torch.ones(10, 1), e[:, None])          # each token's expert, weight 1
    torch.testing.assert_close(block(x).reshape(-1, TINY.d_model), unit * p[:, None], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(("change", "message"), [
    ({"router": "expert_choice"}, r"model.router must be one of topk, switch, hash, topk_gumbel, got 'expert_choice'"),
    ({"router": "switch"}, r"model.router 'switch' sends each token to one expert: set model.top_k 1 \(got 2\)"),
    ({"router": "hash"}, r"model.router 'hash' sends each token to one expert"),
])
def test_bad_router_config(change, message):
    with pytest.raises(ConfigError, match=message) as err:
        TINY.replace(**change)
    assert "\n" not in str(err.value)


def test_block_records_the_counts_of_the_routing_taken():
    block = MoEBlock(TINY.replace(router="switch", top_k=1))
    x = torch.randn(1, 40, TINY.d_model)
    block(x)
    chosen = block.gate(x.reshape(-1, TINY.d_model)).argmax(-1)
    assert torch.equal(block.routed_counts, torch.bincount(chosen, minlength=TINY.n_experts))
