"""tools/bench_moe_vs_dense.py's dense model: the same active FFN parameters per token as the
MoE model, and its one-expert block computes a plain SwiGLU of width k·F."""


import torch
import torch.nn.functional as F

from koda.config import run as run_config
from koda.model.moe import MoEBlock
from koda.run.flops import active_matmul_params
from tests.helpers.tools import load_tool


def _bench():
    return load_tool("bench_moe_vs_dense")


def test_dense_model_matches_the_moe_models_active_parameters():
    moe = run_config.load("smoke").model
    dense = run_config.load("smoke", _bench().dense_overrides(moe)).model
    assert (dense.d_model, dense.n_layers, dense.n_heads) == (moe.d_model, moe.n_layers, moe.n_heads)
    assert dense.n_experts == 1 and dense.top_k == 1
    # the FFN weights a token passes through are equal; only the router shrinks from E to 1 outputs
    router_diff = moe.n_layers * moe.d_model * (moe.n_experts - 1)
    assert active_matmul_params(moe) - active_matmul_params(dense) == router_diff


def test_one_expert_block_is_a_plain_swiglu():
    cfg = run_config.load("smoke", _bench().dense_overrides(run_config.load("smoke").model)).model
    cfg = cfg.replace(d_model=16, n_heads=2, n_kv_heads=1, ffn_hidden=24)
    torch.manual_seed(0)
    block = MoEBlock(cfg)
    for p in block.parameters():
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(2, 5, 16)                                                     # [B, S, D]
    gate, up = block.experts.gate_up_proj[0].chunk(2, dim=0)                      # [F, D] each
    expected = (F.silu(x @ gate.t()) * (x @ up.t())) @ block.experts.down_proj[0].t()
    torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)
