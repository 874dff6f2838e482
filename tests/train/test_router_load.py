"""Load statistics count the routing each router actually took; EP refuses non-topk routers."""

import copy

import pytest
import torch
from torch import nn

from koda.distributed import ds_config
from koda.errors import ConfigError
from koda.model import KodaForCausalLM
from koda.model.moe import hash_experts, route
from koda.objectives import switch_balance_loss
from koda.objectives.balance import balance_loss_from_counts
from koda.run.router_probe import RouterProbe, load_stats
from tests.helpers.tiny import TINY

IDS = torch.randint(0, TINY.vocab_size, (4, 32), generator=torch.Generator().manual_seed(0))   # [B, S]


def _model(router: str, top_k: int, std: float = 0.02) -> KodaForCausalLM:
    torch.manual_seed(0)
    return KodaForCausalLM(TINY.replace(router=router, top_k=top_k, init_std=std))


def _executed(model: KodaForCausalLM) -> dict[int, list[torch.Tensor]]:
    """The experts tensor [T, k] each block handed its experts: the routing actually run."""
    seen: dict[int, list[torch.Tensor]] = {}
    for i, layer in enumerate(model.model.layers):
        layer.mlp.experts.register_forward_pre_hook(lambda _m, args, i=i: seen.setdefault(i, []).append(args[2]))
    return seen


def _bincount(experts: torch.Tensor) -> torch.Tensor:
    return torch.bincount(experts.reshape(-1), minlength=TINY.n_experts)


@pytest.mark.parametrize(("router", "top_k"), [("topk", 2), ("switch", 1), ("hash", 1), ("topk_gumbel", 2)])
def test_counts_are_the_routing_taken(router, top_k):
    model = _model(router, top_k, std=0.3)     # a sharp router: Gumbel noise rarely matches plain top-k
    executed = _executed(model)
    probe = RouterProbe(model, top_k)
    torch.manual_seed(1)
    model(IDS)
    probe.losses()
    counts = probe.take_counts()
    assert sorted(counts) == [0, 1]
    for layer in (0, 1):
        assert torch.equal(counts[layer], _bincount(executed[layer][0])), (router, layer)
        assert int(counts[layer].sum()) == IDS.numel() * top_k
    if router == "hash":
        assert torch.equal(counts[0], _bincount(hash_experts(IDS.reshape(-1), TINY.n_experts)))


def test_gumbel_counts_differ_from_a_top_k_of_the_gate():
    """What the old probe logged (top-k of the gate logits) is not what a Gumbel router ran."""
    model = _model("topk_gumbel", 2, std=0.3)
    logits = []
    model.model.layers[0].mlp.gate.register_forward_hook(lambda _m, _i, out: logits.append(out))
    probe = RouterProbe(model, 2)
    torch.manual_seed(1)
    model(IDS)
    probe.losses()
    from_gate = switch_balance_loss(logits[0], 2)[1]
    assert not torch.equal(probe.take_counts()[0], from_gate)


def test_balance_loss_uses_the_routing_taken():
    for router, top_k in (("topk", 2), ("switch", 1), ("topk_gumbel", 2)):
        model = _model(router, top_k, std=0.3)
        executed, logits = _executed(model), {}
        for i, layer in enumerate(model.model.layers):
            layer.mlp.gate.register_forward_hook(lambda _m, _i, out, i=i, seen=logits: seen.setdefault(i, out))
        probe = RouterProbe(model, top_k)
        torch.manual_seed(1)
        model(IDS)
        aux, z = probe.losses()
        expected = torch.stack([balance_loss_from_counts(logits[i], _bincount(executed[i][0])) for i in (0, 1)])
        torch.testing.assert_close(aux, expected.mean(), rtol=0, atol=0)
        if router != "topk_gumbel":          # top-k and switch's top-1 are the gate's plain top-k
            old = torch.stack([switch_balance_loss(logits[i], top_k)[0] for i in (0, 1)]).mean()
            assert torch.equal(aux, old), router
        assert z > 0


def test_hash_has_no_balance_loss_and_says_so():
    model = _model("hash", 1)
    lines = []
    probe = RouterProbe(model, 1, log=lines.append)
    assert len(lines) == 1 and "hash" in lines[0] and "[0, 1]" in lines[0]
    model(IDS)
    aux, z = probe.losses()
    assert float(aux) == 0.0 and float(z) == 0.0
    assert sorted(probe.take_counts()) == [0, 1]


def test_evaluation_forwards_are_not_counted():
    model = _model("switch", 1)
    probe = RouterProbe(model, 1)
    probe.enabled = False
    model(IDS)
    probe.enabled = True
    model(IDS[:1])
    probe.losses()
    assert int(probe.take_counts()[0].sum()) == IDS.shape[1]


class _AutoEPLike(nn.Module):
    """The parts of DeepSpeed's AutoEPMoELayer the probe reads: ``router.gate`` and a float32
    ``tokens_per_expert`` buffer that only ever adds (deepspeed/module_inject/auto_ep_layer.py)."""

    def __init__(self):
        super().__init__()
        self.router = nn.Module()
        self.router.gate = nn.Linear(TINY.d_model, TINY.n_experts, bias=False)
        self.register_buffer("tokens_per_expert", torch.full((TINY.n_experts,), 2.0**25), persistent=False)

    def forward(self, x):
        experts = route(self.router.gate(x.reshape(-1, x.shape[-1])), 2)[1]
        self.tokens_per_expert.add_(_bincount(experts).float())
        self.last = _bincount(experts)
        return x


def test_autoep_counts_are_per_forward_from_its_buffer():
    net = nn.Module()
    net.layers = nn.ModuleList([nn.Module()])
    net.layers[0].mlp = _AutoEPLike()
    probe = RouterProbe(net, 2)
    total = torch.zeros(TINY.n_experts, dtype=torch.long)
    for seed in (0, 1):
        net.layers[0].mlp(torch.randn(1, 33, TINY.d_model, generator=torch.Generator().manual_seed(seed)))
        total += net.layers[0].mlp.last
        probe.losses()
    assert torch.equal(probe.take_counts()[0], total)       # a difference of running float32 totals past 2^24 would not


def test_load_stats_by_hand():
    stats = load_stats({0: torch.tensor([6, 2, 0, 0]), 3: torch.tensor([2, 2, 2, 2])})
    assert stats["moe/layer0/tokens"] == [6, 2, 0, 0]
    assert stats["moe/layer0/share"] == [0.75, 0.25, 0.0, 0.0]
    assert stats["moe/layer0/utilisation"] == 0.5 and stats["moe/layer3/utilisation"] == 1.0
    assert stats["moe/layer0/load_std"] == pytest.approx((0.375 / 4) ** 0.5)
    assert stats["moe/layer3/load_std"] == 0.0
    assert stats["moe/layer0/load_max_min"] == 6.0 and stats["moe/layer3/load_max_min"] == 1.0
    assert stats["moe/load_std"] == stats["moe/layer0/load_std"]
    assert stats["moe/utilisation"] == 0.5 and stats["moe/load_max_min"] == 6.0


# ------------------------------------------------------------------ expert parallelism
def _resolve(name: str, model):
    return ds_config.resolve(copy.deepcopy(ds_config.load(name)), model=model, world_size=2, train_steps=100,
                             bf16_supported=False)


@pytest.mark.parametrize(("router", "top_k"), [("switch", 1), ("hash", 1), ("topk_gumbel", 2)])
def test_expert_parallel_refuses_other_routers_in_one_line(router, top_k):
    with pytest.raises(ConfigError) as err:
        _resolve("zero3_ep_smoke.json", TINY.replace(router=router, top_k=top_k))
    message = str(err.value)
    assert "\n" not in message and "expert_parallel.enabled" in message and f"model.router is {router!r}" in message
    plan = _resolve("zero3_smoke.json", TINY.replace(router=router, top_k=top_k))
    assert plan.ep_size == 1 and plan.zero_stage == 3
    assert _resolve("zero3_ep_smoke.json", TINY).ep_size == 2       # topk keeps AutoEP


def test_koda_train_refuses_before_any_rank_starts(capsys, tmp_path):
    from koda.cli import main

    assert main(["train", "--config", "smoke", "--run-dir", str(tmp_path), "--set", "model.router=hash",
                 "--set", "model.top_k=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("koda train: error: ds_config.expert_parallel.enabled is true, but model.router is 'hash'")
    assert "\n" not in err


# ------------------------------------------------------------------ two ranks
@pytest.mark.slow
def test_hash_router_trains_under_zero3_without_expert_parallelism(tiny_data, tmp_path):
    """ZeRO-3, expert parallelism off: KODA's own block runs with the token ids threaded
    through, its experts partitioned across the ranks, and the load metrics are logged."""
    import json

    from tests.helpers.ranks import run_ranks
    from tests.helpers.tiny import write_run_config

    run_dir = tmp_path / "run"
    config = write_run_config(tmp_path / "run.yaml", tiny_data, run_dir, steps=20,
                              model={"router": "hash", "top_k": 1})
    raw = json.loads(config.with_suffix(".ds.json").read_text())
    raw["expert_parallel"] = ds_config.load("zero3_smoke.json")["expert_parallel"]
    config.with_suffix(".ds.json").write_text(json.dumps(raw))
    results = run_ranks("tests.helpers.router_jobs:train_and_describe", {"config_path": str(config)}, tmp_path / "o")
    for r in results:
        assert r["layer_type"] == "MoEBlock" and not r["has_gate"] and r["ep_size"] == 1, r
        assert r["local_numel"] * 2 == r["full_numel"], r          # each rank holds half of every expert tensor
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if "train/ce" in r]
    assert len(train) == 20 and sum(r["train/ce"] for r in train[-5:]) < sum(r["train/ce"] for r in train[:5]) - 0.5
    assert all(r["train/aux_loss"] == 0.0 for r in train)
    last = train[-1]
    assert 0 < last["moe/utilisation"] <= 1 and last["moe/load_std"] >= 0
    assert sum(last["moe/layer0/share"]) == pytest.approx(1.0)


def test_compare_tool_gives_each_router_a_config_that_resolves():
    """tools/compare_routers.py: topk keeps the smoke config's AutoEP, the others run without it."""
    from koda.config import run as run_config
    from tests.helpers.tools import load_tool

    tool = load_tool("compare_routers")
    for router in tool.ROUTERS:
        cfg = run_config.load("smoke", tool.overrides(router))
        plan = _resolve(cfg.ds_config, cfg.model)
        assert cfg.model.router == router and plan.ep_size == (2 if router == "topk" else 1), router
