import pytest
import torch

from koda.model import KodaForCausalLM
from koda.model.init import spectrum_report
from tests.helpers.tiny import TINY


def test_orthogonal_init_has_flat_spectrum_with_the_normal_init_scale():
    torch.manual_seed(0)
    cfg = TINY.replace(init="orthogonal")
    rows = {r.name: r for r in spectrum_report(KodaForCausalLM(cfg), cfg)}
    for row in rows.values():
        assert row.condition < 1.0001, row
    q = rows["model.layers.0.self_attn.q_proj.weight"]
    assert abs(q.smean - cfg.init_std * 64 ** 0.5) < 1e-4


def test_normal_init_spreads_like_marchenko_pastur():
    torch.manual_seed(0)
    rows = {r.name: r for r in spectrum_report(KodaForCausalLM(TINY), TINY)}
    head = rows["lm_head.weight"]       # 512 x 64: a tall i.i.d. matrix
    assert head.condition > 1.5
    assert 0.8 * head.mp_low < head.smin and head.smax < 1.2 * head.mp_high


def test_init_check_command_prints_every_weight(capsys):
    from koda.cli import main

    assert main(["init-check", "--model", "smoke", "--init", "orthogonal"]) == 0
    out = capsys.readouterr().out
    assert "model.layers.3.mlp.experts.gate_up_proj" in out and "lm_head.weight" in out


@pytest.mark.parametrize("init", ["normal", "orthogonal"])
def test_init_in_bf16_equals_the_fp32_init_rounded_once(init):
    """A model whose parameters are created in bf16 (as zero.Init creates them) gets the fp32
    init rounded once: the weights a model built in fp32 and then cast holds."""
    cfg = TINY.replace(init=init)
    torch.manual_seed(0)
    expected = {k: v.to(torch.bfloat16) for k, v in KodaForCausalLM(cfg).state_dict().items()}
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        got = KodaForCausalLM(cfg).state_dict()
    finally:
        torch.set_default_dtype(default)
    assert all(got[k].dtype == torch.bfloat16 and torch.equal(got[k], v) for k, v in expected.items())
