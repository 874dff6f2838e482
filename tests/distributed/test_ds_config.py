import copy

import pytest
import torch

from koda.distributed import ds_config
from koda.errors import ConfigError
from tests.helpers.tiny import TINY

BASE = ds_config.load("zero3_ep_smoke.json")


def _resolve(change=None, world=2, model=TINY, steps=100):
    cfg = copy.deepcopy(BASE)
    for key, value in (change or {}).items():
        node = cfg
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return ds_config.resolve(cfg, model=model, world_size=world, train_steps=steps, bf16_supported=False).config


def test_fills_autoep_contract_and_schedule():
    cfg = _resolve()
    ep = cfg["expert_parallel"]
    assert ep["autoep_size"] == 2 and ep["top_k"] == 2 and ep["expert_w1"] == "gate_up_proj"
    assert cfg["scheduler"]["params"]["total_num_steps"] == 100
    assert cfg["train_batch_size"] == 4 * 1 * 2
    assert cfg["bf16"]["enabled"] is False


def test_auto_ep_size_follows_the_world():
    assert _resolve(world=1)["expert_parallel"]["autoep_size"] == 1
    assert _resolve(world=4)["expert_parallel"]["autoep_size"] == 4
    assert _resolve(world=6)["expert_parallel"]["autoep_size"] == 2


BAD = [
    ({"zero_optimisation": {}}, {}, r"unknown key 'zero_optimisation' \(did you mean 'zero_optimization'\?\)"),
    ({"expert_parallel.autoep_size": 3}, {"world": 3}, r"autoep_size 3 does not divide model.n_experts 4"),
    ({"expert_parallel.autoep_size": 4}, {"world": 2}, r"autoep_size 4 does not divide world size 2"),
    ({"expert_parallel.load_balance_coeff": 0.01}, {}, r"load_balance_coeff is refused .* moe.aux_loss_weight"),
    ({"expert_parallel.top_k": 1}, {}, r"expert_parallel.top_k is 1, but KODA's model needs 2"),
    ({"expert_parallel.expert_w1": "w1"}, {}, r"expert_w1 is 'w1'"),
    ({"train_batch_size": 5}, {}, r"train_batch_size 5 != train_micro_batch_size_per_gpu 4 x "
                                  r"gradient_accumulation_steps 1 x world size 2"),
    ({"train_micro_batch_size_per_gpu": 0}, {}, r"train_micro_batch_size_per_gpu must be a positive integer"),
    ({"scheduler.params.total_num_steps": 50}, {}, r"total_num_steps 50 != train.steps 100"),
    ({"scheduler.params.warmup_num_steps": 100}, {}, r"warmup_num_steps 100 >= train.steps 100"),
    ({"zero_optimization.stage": 3, "zero_optimization.bogus": 1}, {}, r"rejected by DeepSpeed: .*bogus"),
]


@pytest.mark.parametrize(("change", "kwargs", "message"), BAD)
def test_bad_ds_config(change, kwargs, message):
    with pytest.raises(ConfigError, match=message) as err:
        _resolve(change, **kwargs)
    assert "\n" not in str(err.value)


def test_unreadable_json_names_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"train_micro_batch_size_per_gpu": 2,\n "x": }')
    with pytest.raises(ConfigError, match=r"invalid JSON at line 2 column"):
        ds_config.load(str(path))
    with pytest.raises(ConfigError, match="neither a file nor a config"):
        ds_config.load("no_such.json")


def test_plan_carries_what_the_trainer_reads_back():
    raw = copy.deepcopy(BASE)
    raw.update(train_micro_batch_size_per_gpu=3, gradient_accumulation_steps=5, bf16={"enabled": "auto"})
    plan = ds_config.resolve(raw, model=TINY, world_size=4, train_steps=100, bf16_supported=True)
    assert (plan.world, plan.micro_batch, plan.grad_accum, plan.ep_size) == (4, 3, 5, 4)
    assert plan.precision == "bf16" and plan.dtype == torch.bfloat16 and plan.zero_stage == 3
    assert plan.global_batch == plan.config["train_batch_size"] == 60
    off = copy.deepcopy(BASE)
    del off["expert_parallel"]
    plan = ds_config.resolve(off, model=TINY, world_size=2, train_steps=100, bf16_supported=False)
    assert plan.ep_size == 1 and plan.precision == "fp32" and plan.dtype == torch.float32


def test_plan_refuses_to_replace_a_section_it_derived_from():
    plan = ds_config.resolve(copy.deepcopy(BASE), model=TINY, world_size=2, train_steps=100, bf16_supported=False)
    assert plan.with_config(checkpoint={"load_universal": True}).config["checkpoint"] == {"load_universal": True}
    assert "checkpoint" not in plan.config
    with pytest.raises(ConfigError, match="'expert_parallel' is derived"):
        plan.with_config(expert_parallel={"enabled": False})


def _plan(change=None):
    cfg = copy.deepcopy(BASE)
    cfg.update(change or {})
    return ds_config.resolve(cfg, model=TINY, world_size=2, train_steps=100, bf16_supported=False)


def test_client_optimizer_drops_the_config_optimizer_and_allows_ours():
    """DeepSpeed would ignore the section silently next to a client optimizer, and ZeRO refuses
    an unknown optimizer class without the flag."""
    plan = _plan()
    assert "optimizer" in plan.config
    client = ds_config.with_client_optimizer(plan, lr=0.05)
    assert "optimizer" not in client.config and client.config["zero_allow_untested_optimizer"] is True
    assert client.config["scheduler"] == plan.config["scheduler"]     # the schedule stays DeepSpeed's
    assert "optimizer" in plan.config                                 # the input plan is left alone
    assert (client.micro_batch, client.grad_accum, client.ep_size) == (plan.micro_batch, plan.grad_accum,
                                                                      plan.ep_size)


CLIENT_CONFLICTS = [
    ({"zero_allow_untested_optimizer": False}, r"ds_config.zero_allow_untested_optimizer is false"),
    ({"zero_optimization": {"stage": 3, "offload_optimizer": {"device": "cpu"}}},
     r"offload_optimizer: DeepSpeed refuses KODA's optimizer under ZeRO-Offload"),
    ({"scheduler": {"type": "WarmupLR", "params": {"warmup_max_lr": 0.001, "warmup_num_steps": 10}}},
     r"ds_config.scheduler.params.warmup_max_lr 0.001 != optimizer.lr 0.05"),
]


@pytest.mark.parametrize(("change", "message"), CLIENT_CONFLICTS)
def test_client_optimizer_conflicts_are_one_line(change, message):
    with pytest.raises(ConfigError, match=message) as err:
        ds_config.with_client_optimizer(_plan(change), lr=0.05)
    assert "\n" not in str(err.value)


def test_client_optimizer_accepts_agreeing_settings():
    plan = _plan({"zero_allow_untested_optimizer": True,
                  "scheduler": {"type": "WarmupLR", "params": {"warmup_max_lr": 0.05, "warmup_num_steps": 10}}})
    assert ds_config.with_client_optimizer(plan, lr=0.05).config["scheduler"]["params"]["warmup_max_lr"] == 0.05
