"""Orthogonality penalty math, its hooks, the warm-up, the spectrum statistics and the config
section; single process, small tensors. The 2-rank ZeRO-3 + AutoEP check is in
test_isometry_two_rank.py."""

import pytest
import torch
import yaml

from koda.config import run as run_config
from koda.errors import ConfigError, KodaError
from koda.model import KodaForCausalLM
from koda.pretrain.isometry import (
    OrthoPenalty,
    gram_deviation,
    gram_penalty,
    merge_spectra,
    penalty_weight,
    select_weights,
    spectrum_sample,
    spectrum_summary,
    weight_kind,
)
from tests.helpers.tiny import TINY


def _orthonormal(m: int, n: int, seed: int = 0) -> torch.Tensor:
    """[m, n] with orthonormal columns (m >= n) or rows (m < n)."""
    g = torch.randn(max(m, n), min(m, n), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    q, _ = torch.linalg.qr(g)
    return q if m >= n else q.T


def test_penalty_is_zero_for_orthogonal_weights_tall_wide_and_per_expert():
    stack = torch.stack([_orthonormal(12, 5, s) for s in range(3)])           # [E, m, n]
    for w in (_orthonormal(12, 5), _orthonormal(5, 12), _orthonormal(7, 7), stack):
        assert float(gram_deviation(w).sum()) == pytest.approx(0.0, abs=1e-20)
    # c * orthonormal: every singular value is c, so ||G - I||^2 = min(m, n) * (c^2 - 1)^2
    assert float(gram_deviation(3.0 * _orthonormal(5, 12))) == pytest.approx(5 * 64.0)


def test_penalty_matches_a_hand_computation_on_the_smaller_gram_side():
    tall = torch.tensor([[1.0, 2.0], [0.0, 1.0], [0.0, 0.0]])     # W^T W = [[1, 2], [2, 5]]
    assert float(gram_deviation(tall)) == 0 + 4 + 4 + 16            # the larger side, W W^T, gives 25
    assert float(gram_deviation(tall.T)) == 24.0                   # wide: W W^T, the same 2 x 2 Gram
    # 3-D: each expert on its own (stacking the rows of both into one matrix would give 68)
    both = torch.stack([tall, 2 * tall])
    expected = 24.0 + float(gram_deviation(2 * tall))
    assert float(gram_penalty(both)) == pytest.approx(expected)


@pytest.mark.parametrize("shape", [(9, 4), (4, 9), (3, 9, 4)])
def test_gradient_is_the_analytic_one_and_a_step_along_it_reduces_the_deviation(shape):
    w = (0.3 * torch.randn(*shape, generator=torch.Generator().manual_seed(1))).requires_grad_(True)
    gram_penalty(w, scale=2.0).backward()
    d = w.detach()
    m, n = shape[-2:]
    eye = torch.eye(min(m, n))
    tall = 4 * d @ (d.transpose(-1, -2) @ d - eye) if m >= n else None
    expected = tall if m >= n else 4 * (d @ d.transpose(-1, -2) - eye) @ d
    torch.testing.assert_close(w.grad, 2.0 * expected, rtol=1e-5, atol=1e-6)
    before = float(gram_deviation(d).sum())
    after = float(gram_deviation(d - 1e-3 * w.grad).sum())
    assert after < before - 1e-4


def test_gradient_keeps_the_parameter_dtype():
    w = torch.randn(6, 4).to(torch.bfloat16).requires_grad_(True)
    value = gram_penalty(w)
    assert value.dtype == torch.float32
    value.backward()
    assert w.grad.dtype == torch.bfloat16


def test_warmup_is_linear_and_then_constant():
    assert [penalty_weight(0.2, 4, s) for s in range(6)] == pytest.approx([0.05, 0.1, 0.15, 0.2, 0.2, 0.2])
    assert penalty_weight(0.2, 0, 0) == 0.2
    assert penalty_weight(0.0, 10, 3) == 0.0


def test_patterns_select_matrices_by_name_and_never_norms():
    model = KodaForCausalLM(TINY)
    names = [name for name, _, _ in select_weights(model, ["q_proj", r"experts\.down_proj"])]
    assert names == ["model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.experts.down_proj",
                     "model.layers.1.self_attn.q_proj.weight", "model.layers.1.mlp.experts.down_proj"]
    assert select_weights(model, ["layernorm"]) == []          # 1-D scales match the name but are skipped
    with pytest.raises(KodaError, match=r"isometry.ortho_patterns \['w9'\] match no 2-D or 3-D weight"):
        OrthoPenalty(model, ["w9"])


def test_hooks_add_each_selected_weight_once_per_training_forward_with_expert_scaling():
    torch.manual_seed(0)
    model = KodaForCausalLM(TINY)
    probe = OrthoPenalty(model, ["o_proj", "gate_up_proj"], expert_scale=2.0)
    tokens = torch.randint(0, TINY.vocab_size, (2, 8))
    with torch.no_grad():
        model(tokens)                              # evaluation forwards add nothing
    assert float(probe.take()) == 0.0
    model(tokens)
    value = probe.take()
    params = dict(model.named_parameters())
    expected = sum(float(gram_deviation(params[f"model.layers.{i}.self_attn.o_proj.weight"].detach()))
                   + 2.0 * float(gram_deviation(params[f"model.layers.{i}.mlp.experts.gate_up_proj"].detach()).sum())
                   for i in range(TINY.n_layers))
    assert float(value.detach()) == pytest.approx(expected, rel=1e-5)
    value.backward()
    assert params["model.layers.0.self_attn.q_proj.weight"].grad is None
    w = params["model.layers.1.self_attn.o_proj.weight"].detach()
    torch.testing.assert_close(params["model.layers.1.self_attn.o_proj.weight"].grad,
                               4 * w @ (w.T @ w - torch.eye(w.shape[1])), rtol=1e-4, atol=1e-6)
    probe.remove()
    model(tokens)
    assert float(probe.take()) == 0.0


def test_backward_uses_the_values_seen_in_forward_not_the_parameter_at_backward_time():
    """ZeRO-3 empties a weight after its module's forward and gathers it again for backward;
    the penalty's gradient is the one of the forward-time values whatever the parameter holds
    meanwhile (an autograd graph through W^T W would read the parameter again)."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(6, 10, bias=False)
    probe = OrthoPenalty(layer, ["weight"])
    layer(torch.randn(3, 6))
    full = layer.weight.detach().clone()
    layer.weight.data = torch.empty(0)             # DeepSpeed's release after the forward
    layer.weight.data = torch.zeros(10, 6)         # and a gather (here: other values) before backward
    probe.take().backward()
    torch.testing.assert_close(layer.weight.grad, 4 * full @ (full.T @ full - torch.eye(6)), rtol=1e-4, atol=1e-6)


def test_a_weight_not_gathered_in_its_forward_is_an_error():
    layer = torch.nn.Linear(6, 10, bias=False)
    probe = OrthoPenalty(layer, ["weight"])
    layer.weight.ds_shape = torch.Size([10, 6])
    layer.weight.data = torch.empty(0)
    with pytest.raises(KodaError, match="not gathered in its forward"):
        probe._hook(["weight"])(layer, ())


def test_kinds_and_layer_sample():
    assert weight_kind("model.layers.3.self_attn.q_proj.weight") == "q_proj"
    assert weight_kind("model.layers.0.mlp.experts.w1") == "experts.w1"
    assert weight_kind("model.layers.0.mlp.router.gate.weight") == "router.gate"
    names = [f"model.layers.{i}.self_attn.q_proj.weight" for i in range(8)] + ["lm_head.weight"]
    assert spectrum_sample(names, 8, 3) == [names[0], names[4], names[7]]
    assert spectrum_sample(names, 8, 20) == names[:8]
    assert spectrum_sample(names, 8, 1) == [names[0]]


def test_spectrum_statistics_of_orthogonal_random_and_spiked_weights():
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(400, 100, generator=gen)
    u, v = torch.randn(400, 3, generator=gen), torch.randn(3, 100, generator=gen)
    spiked = noise + 0.5 * u @ v                   # three directions far above the noise bulk
    metrics = merge_spectra([spectrum_summary({"a.q_proj.weight": _orthonormal(40, 10).float(),
                                               "a.k_proj.weight": noise, "a.v_proj.weight": spiked})])
    assert metrics["iso/q_proj/sv_max"] == pytest.approx(1.0) and metrics["iso/q_proj/cond"] == pytest.approx(1.0)
    assert metrics["iso/q_proj/gram_dev"] == pytest.approx(0.0, abs=1e-9)
    # i.i.d. noise: inside the bulk but for edge fluctuations of a finite matrix
    assert metrics["iso/k_proj/mp_inside"] > 0.9 and metrics["iso/k_proj/mp_above"] <= 0.02
    assert metrics["iso/v_proj/mp_above"] >= 0.03
    assert metrics["iso/k_proj/cond"] == pytest.approx(float(torch.linalg.cond(noise)), rel=1e-4)


def test_merging_rank_summaries_equals_the_summary_of_all_experts():
    gen = torch.Generator().manual_seed(2)
    experts = torch.randn(4, 12, 6, generator=gen) * torch.tensor([1.0, 0.5, 2.0, 0.1])[:, None, None]
    whole = merge_spectra([spectrum_summary({"m.layers.0.mlp.experts.w1": experts})])
    halves = merge_spectra([spectrum_summary({"m.layers.0.mlp.experts.w1": experts[:2]}),
                            spectrum_summary({"m.layers.0.mlp.experts.w1": experts[2:3]}),
                            spectrum_summary({"m.layers.0.mlp.experts.w1": experts[3:]})])
    assert halves == pytest.approx(whole)
    assert whole["iso/experts.w1/sv_max"] == pytest.approx(float(torch.linalg.svdvals(experts).max()))


BASE = {"model": {"preset": "smoke"}, "ds_config": "zero3_ep_smoke.json", "run_dir": "runs/x"}


@pytest.mark.parametrize(("section", "message"), [
    ({"ortho_lamda": 1}, r"isometry: unknown key 'ortho_lamda' \(did you mean 'ortho_lambda'\?\)"),
    ({"ortho_lambda": -0.1}, r"isometry.ortho_lambda must be a finite number >= 0, got -0.1"),
    ({"ortho_lambda": float("nan")}, r"isometry.ortho_lambda must be a finite number >= 0, got nan"),
    ({"ortho_warmup_steps": -1}, r"isometry.ortho_warmup_steps must be an integer >= 0, got -1"),
    ({"spectrum_every": 2.5}, r"isometry.spectrum_every must be an integer >= 0, got 2.5"),
    ({"spectrum_layers": 0}, r"isometry.spectrum_layers must be an integer >= 1, got 0"),
    ({"ortho_patterns": "q_proj"}, r"isometry.ortho_patterns must be a list of non-empty strings, got 'q_proj'"),
    ({"ortho_patterns": ["q_proj("]}, r"isometry.ortho_patterns: 'q_proj\(' is not a regular expression"),
    ({"ortho_lambda": 0.1, "ortho_patterns": []}, r"isometry.ortho_lambda 0.1 needs at least one entry"),
])
def test_bad_isometry_section_is_one_line(tmp_path, section, message):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({**BASE, "isometry": section}))
    with pytest.raises(ConfigError, match=message) as err:
        run_config.load(str(path))
    assert "\n" not in str(err.value)


def test_isometry_section_parses_and_defaults_to_off(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(BASE))
    assert run_config.load(str(path)).isometry.ortho_lambda == 0.0
    path.write_text(yaml.safe_dump({**BASE, "isometry": {"ortho_lambda": 0.01, "ortho_patterns": ["experts.w1"]}}))
    cfg = run_config.load(str(path), ["isometry.spectrum_every=10"])
    assert cfg.isometry.ortho_patterns == ("experts.w1",) and cfg.isometry.spectrum_every == 10
