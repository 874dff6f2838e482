"""koda.naming: KODA, AutoEP and Hugging Face Mixtral names, and the round trips between them."""

import re

import pytest
import torch
from torch import nn

from koda.errors import KodaError
from koda.model import KodaForCausalLM
from koda.naming import (
    AUTOEP_NAMING,
    ROUTER_MODULE,
    assemble,
    autoep_to_koda_plan,
    hf_plan,
    koda_state_from_hf,
    koda_to_autoep,
    moe_blocks,
    produce_hf,
)
from tests.helpers.tiny import TINY

MIXED = TINY.replace(n_layers=4, moe_every=2)        # layers 1 and 3 MoE, 0 and 2 dense SwiGLU


def _state(cfg):
    torch.manual_seed(0)
    return KodaForCausalLM(cfg).state_dict()


def test_autoep_contract_names_what_the_model_has():
    model = KodaForCausalLM(MIXED)
    found = []
    for name, module in model.named_modules():
        router = getattr(module, AUTOEP_NAMING["router_pattern"], None)
        if re.fullmatch(AUTOEP_NAMING["moe_layer_pattern"], name) and isinstance(router, nn.Linear):
            experts = getattr(module, AUTOEP_NAMING["expert_pattern"])
            w1, w2 = getattr(experts, AUTOEP_NAMING["expert_w1"]), getattr(experts, AUTOEP_NAMING["expert_w2"])
            assert w1.shape == (TINY.n_experts, 2 * TINY.ffn_hidden, TINY.d_model)
            assert w2.shape == (TINY.n_experts, TINY.d_model, TINY.ffn_hidden)
            found.append(name)
    assert found == ["model.layers.1.mlp", "model.layers.3.mlp"]


def test_router_module_matches_both_layouts_and_not_a_dense_gate_proj():
    assert ROUTER_MODULE.search("model.layers.3.mlp.gate").group(1) == "3"
    assert ROUTER_MODULE.search("model.layers.12.mlp.router.gate").group(1) == "12"
    assert ROUTER_MODULE.search("model.layers.0.mlp.gate_proj") is None
    assert ROUTER_MODULE.search("model.layers.0.mlp.router.gate.weight") is None     # modules, not parameters


def test_moe_blocks_are_found_in_either_layout_and_dense_mlps_are_not_blocks():
    state = _state(MIXED)
    assert moe_blocks(state) == ["model.layers.1.mlp", "model.layers.3.mlp"]
    assert moe_blocks(koda_to_autoep(state, moe_blocks(state))) == ["model.layers.1.mlp", "model.layers.3.mlp"]


def test_koda_autoep_koda_round_trip_keeps_dense_layers_and_splits_gate_up_rows():
    state = _state(MIXED)
    autoep = koda_to_autoep(state, moe_blocks(state))
    F = TINY.ffn_hidden
    assert torch.equal(autoep["model.layers.1.mlp.experts.w1"], state["model.layers.1.mlp.experts.gate_up_proj"][:, :F])
    assert torch.equal(autoep["model.layers.1.mlp.experts.w3"], state["model.layers.1.mlp.experts.gate_up_proj"][:, F:])
    assert torch.equal(autoep["model.layers.3.mlp.router.gate.weight"], state["model.layers.3.mlp.gate.weight"])
    assert torch.equal(autoep["model.layers.0.mlp.gate_proj.weight"], state["model.layers.0.mlp.gate_proj.weight"])
    plan = autoep_to_koda_plan({k: tuple(v.shape) for k, v in autoep.items()}, moe_blocks(autoep))
    assert list(plan) == [n for n in state if n in plan] and set(plan) == set(state)
    for name, (shape, sources) in plan.items():
        assert torch.equal(assemble(sources, autoep.__getitem__), state[name]) and state[name].shape == shape, name


def test_koda_hf_koda_round_trip_and_a_missing_expert_is_named():
    state = _state(TINY)
    plan = hf_plan({k: tuple(v.shape) for k, v in state.items()})
    hf = {name: produce_hf(entry, state.__getitem__) for name, entry in plan.items()}
    F = TINY.ffn_hidden
    assert torch.equal(hf["model.layers.1.block_sparse_moe.experts.2.w3.weight"],
                       state["model.layers.1.mlp.experts.gate_up_proj"][2, F:])
    assert "model.layers.0.block_sparse_moe.gate.weight" in hf and "model.layers.0.mlp.gate.weight" not in hf
    back = koda_state_from_hf(hf, TINY.n_experts, TINY.n_layers)
    assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)
    del hf["model.layers.1.block_sparse_moe.experts.3.w2.weight"]
    with pytest.raises(KodaError, match=r"^Mixtral weights: layer 1 has w2 for experts \[0, 1, 2\], expected 0..3$"):
        koda_state_from_hf(hf, TINY.n_experts, TINY.n_layers)
