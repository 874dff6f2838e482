"""The standalone directory on its own: save, load, shard, name mappings, and bad inputs."""

import json

import pytest
import torch
from safetensors.torch import load_file

from koda.checkpoint import load_standalone, read_config, save_standalone
from koda.checkpoint.safetensors_io import parse_size, plan_shards
from koda.errors import KodaError
from koda.model import KodaForCausalLM
from koda.naming import assemble, autoep_to_koda_plan, hf_plan, koda_state_from_hf, koda_to_autoep, produce_hf
from tests.helpers.tiny import TINY

INPUTS = torch.randint(0, TINY.vocab_size, (2, 16), generator=torch.Generator().manual_seed(3))


def _model(cfg=TINY, seed=0):
    torch.manual_seed(seed)
    return KodaForCausalLM(cfg).eval()


def test_save_then_load_gives_identical_logits_and_plain_safetensors_reads_it(tmp_path):
    model = _model()
    summary = save_standalone(model, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    assert summary.parameters == sum(p.numel() for p in model.parameters())
    plain = load_file(tmp_path / "m" / "model.safetensors")
    assert set(plain) == set(model.state_dict())
    loaded = load_standalone(tmp_path / "m")
    with torch.no_grad():
        assert torch.equal(loaded(INPUTS), model(INPUTS))
    assert load_standalone(tmp_path / "m", dtype=torch.bfloat16).lm_head.weight.dtype == torch.bfloat16


def test_sharded_output_has_an_index_and_loads_back(tmp_path):
    model = _model()
    summary = save_standalone(model, tmp_path / "m", max_shard_size="200KB", dtype=torch.bfloat16)
    index = json.loads((tmp_path / "m" / "model.safetensors.index.json").read_text())
    assert summary.files == len(set(index["weight_map"].values())) > 1
    assert index["metadata"]["total_size"] == summary.bytes
    loaded = load_standalone(tmp_path / "m")
    assert loaded.lm_head.weight.dtype == torch.bfloat16
    assert torch.equal(loaded.lm_head.weight, model.lm_head.weight.to(torch.bfloat16))
    assert read_config(tmp_path / "m").dtype == torch.bfloat16


def test_shard_planning_and_sizes():
    assert parse_size("2GB") == 2 * 10**9 and parse_size("1MiB") == 2**20 and parse_size("123") == 123
    with pytest.raises(KodaError, match="unit"):
        parse_size("2 parsecs")
    assert plan_shards({"a": 5, "b": 5, "c": 20, "d": 1}, 10) == [["a", "b"], ["c"], ["d"]]


def test_config_and_weights_that_disagree_are_one_line_errors(tmp_path):
    save_standalone(_model(), tmp_path / "m")
    config_path = tmp_path / "m" / "config.json"
    config = json.loads(config_path.read_text())

    config["model"]["d_model"] = 128
    config_path.write_text(json.dumps(config))
    with pytest.raises(KodaError, match=r"embed_tokens.weight has shape \(512, 64\), the config says \(512, 128\)"):
        load_standalone(tmp_path / "m")

    config["model"]["d_model"], config["model"]["n_layers"] = 64, 3
    config_path.write_text(json.dumps(config))
    with pytest.raises(KodaError, match="model.layers.2.* is missing"):
        load_standalone(tmp_path / "m")

    config["model"]["n_layers"], config["format_version"] = 2, 99
    config_path.write_text(json.dumps(config))
    with pytest.raises(KodaError, match="format version 99"):
        load_standalone(tmp_path / "m")

    config["format_version"], config["model"]["flavour"] = 1, "x"
    config_path.write_text(json.dumps(config))
    with pytest.raises(KodaError, match="unknown key 'flavour'"):
        load_standalone(tmp_path / "m")

    with pytest.raises(KodaError, match="no config.json"):
        load_standalone(tmp_path)


def test_existing_output_is_refused(tmp_path):
    (tmp_path / "m").mkdir()
    with pytest.raises(KodaError, match="already exists"):
        save_standalone(_model(), tmp_path / "m")


def test_autoep_names_round_trip():
    state = _model().state_dict()
    blocks = [f"model.layers.{i}.mlp" for i in range(TINY.n_layers)]
    autoep = koda_to_autoep(state, blocks)
    assert "model.layers.0.mlp.router.gate.weight" in autoep
    assert autoep["model.layers.1.mlp.experts.w1"].shape == (TINY.n_experts, TINY.ffn_hidden, TINY.d_model)
    assert torch.equal(autoep["model.layers.1.mlp.experts.w3"],
                       state["model.layers.1.mlp.experts.gate_up_proj"][:, TINY.ffn_hidden:])
    plan = autoep_to_koda_plan({k: tuple(v.shape) for k, v in autoep.items()}, blocks)
    assert set(plan) == set(state)
    for name, (shape, sources) in plan.items():
        rebuilt = assemble(sources, autoep.__getitem__)
        assert tuple(rebuilt.shape) == shape and torch.equal(rebuilt, state[name]), name
    with pytest.raises(KodaError, match="unexpected parameter 'experts.w4'"):
        autoep_to_koda_plan({"model.layers.0.mlp.experts.w4": (1,)}, blocks)


def test_hf_mixtral_names_round_trip_and_layout_check(tmp_path):
    state = _model().state_dict()
    plan = hf_plan({k: tuple(v.shape) for k, v in state.items()})
    hf = {name: produce_hf(entry, state.__getitem__) for name, entry in plan.items()}
    assert hf["model.layers.0.block_sparse_moe.experts.3.w2.weight"].shape == (TINY.d_model, TINY.ffn_hidden)
    back = koda_state_from_hf(hf, TINY.n_experts, TINY.n_layers)
    assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)
    with pytest.raises(KodaError, match="use --format koda"):
        save_standalone(_model(TINY.replace(moe_every=2)), tmp_path / "hf", fmt="hf-mixtral")
    assert not (tmp_path / "hf").exists()


def test_hf_mixtral_export_loads_in_koda_and_in_transformers(tmp_path):
    model = _model(TINY.replace(init_std=0.2))         # larger weights: routing and logits far from uniform
    save_standalone(model, tmp_path / "hf", fmt="hf-mixtral")
    with torch.no_grad():
        expected = model(INPUTS)
        assert torch.equal(load_standalone(tmp_path / "hf")(INPUTS), expected)
    transformers = pytest.importorskip("transformers")
    hf_model = transformers.MixtralForCausalLM.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        logits = hf_model(INPUTS).logits
    assert (logits - expected).abs().max().item() < 1e-5
