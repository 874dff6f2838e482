"""tools/bench_optim.py: every optimizer it compares trains KODA's model (fused [E, out, in]
expert tensors included) through the bench's loop and schedule, and the summaries count a
seed that never reaches the target as not reaching it."""

import math
from types import SimpleNamespace

import pytest
import torch

from koda.model import KodaForCausalLM
from koda.report import optim_bench
from tests.helpers.tiny import TINY
from tests.helpers.tools import load_tool

pytest.importorskip("pytorch_optimizer")
bench = load_tool("bench_optim")


def _args(**kw):
    return SimpleNamespace(**{"steps": 4, "warmup": 2, "eval_every": 2, "inv_every": 2, "kfac_factor_every": 1,
                              "damping": 1e-3, "factor_decay": 0.95, "kl_clip": 1e-3, "inverse_dtype": "auto",
                              "soap_max_dim": 1024, "soap_every": 2, "kfac_adamw_lr": None, "kfac_update_rms": 0.2,
                              "kfac_nesterov": False, **kw})


@pytest.mark.parametrize("name,lr", [("adamw", 3e-3), ("muon", 1e-2), ("koda-muon", 1e-2), ("soap", 3e-3),
                                     ("kfac", 0.1), ("kfac-rms", 1e-2), ("rms-sgd", 1e-2), ("frozen-hidden", 3e-3),
                                     ("adamw-split", 3e-3)])
def test_optimizer_trains_the_model_in_the_bench_loop(name, lr):
    args = _args()
    g = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, TINY.vocab_size, (2, 17), generator=g) for _ in range(args.steps)]
    val = [torch.randint(0, TINY.vocab_size, (2, 17), generator=g)]
    torch.manual_seed(0)
    before = bench.evaluate(KodaForCausalLM(TINY), val)

    out = bench.run(name, lr, 0, args, batches, val, cfg=TINY)

    assert [p["step"] for p in out["curve"]] == [2, 4] and not out["diverged"]
    assert math.isfinite(out["final_val_loss"]) and out["final_val_loss"] != pytest.approx(before, abs=1e-6)
    params_mb = sum(p.numel() * p.element_size() for p in KodaForCausalLM(TINY).parameters()) / 2**20
    assert out["state_mb"] > 0.5 * params_mb          # moments, momentum or factors: counted
    if name.startswith("kfac"):
        assert set(out["kfac_phase_s_per_step"]) == {"update_factors", "decompose", "precondition"}
        assert all(v > 0 for v in out["kfac_phase_s_per_step"].values())


def test_unknown_optimizer_is_refused():
    with pytest.raises(SystemExit, match="unknown optimizer 'lion'"):
        bench.build("lion", 1e-3, torch.nn.Linear(2, 2), _args(), lambda s: 1.0)


def test_schedule_warms_up_then_decays_to_a_tenth():
    f = bench.schedule_of(_args(steps=10, warmup=2))
    assert [f(0), f(1)] == [0.5, 1.0] and f(2) == pytest.approx(1.0) and f(10) == pytest.approx(0.1)


def test_summaries_need_every_seed_at_the_target():
    def result(losses, lr=1e-3):
        curve = [{"step": 10 * (i + 1), "seconds": 2.0 * (i + 1), "val_loss": v} for i, v in enumerate(losses)]
        return {"lr": lr, "curve": curve, "final_val_loss": losses[-1], "s_per_step": 0.2, "state_mb": 1.0}

    fast, slow = result([5.0, 4.0, 3.0]), result([5.0, 4.5, 4.2])
    assert optim_bench.to_target(fast, 4.0) == (20, 4.0) and optim_bench.to_target(slow, 4.0) == (None, None)
    assert optim_bench.loss_at_time(fast, 5.0) == 4.0 and optim_bench.loss_at_time(fast, 1.0) == math.inf
    rows = optim_bench.summarise({"adamw": [fast, fast], "kfac": [fast, slow]}, target=4.0, budget=4.0)
    assert rows[0]["steps_to_target"] == (20.0, 0.0)
    assert rows[1]["steps_to_target"] is None                  # one seed never got there
    assert rows[1]["final_val_loss"] == (pytest.approx(3.6), pytest.approx(1.2))


def test_adamw_split_moves_kfacs_layers_at_lr_and_the_rest_at_kfacs_adamw_rate():
    """AdamW's first step moves every weight by ~its rate (m / sqrt(v) = ±1): attention at lr,
    the embeddings (left to AdamW by K-FAC) at --kfac-adamw-lr."""
    args = _args(kfac_adamw_lr=1e-2)
    torch.manual_seed(0)
    model = KodaForCausalLM(TINY)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    stepper = bench.build("adamw-split", 1e-3, model, args, lambda s: 1.0)
    stepper.zero_grad()
    tokens = torch.randint(0, TINY.vocab_size, (2, 9), generator=torch.Generator().manual_seed(1))
    bench.loss_of(model, tokens).backward()
    stepper.step()
    step = {n: (p - before[n]).abs().max().item() for n, p in model.named_parameters()}
    assert step["model.layers.0.self_attn.q_proj.weight"] == pytest.approx(1e-3, rel=1e-3)
    assert step["model.embed_tokens.weight"] == pytest.approx(1e-2, rel=1e-3)


def test_frozen_hidden_control_moves_only_what_kfac_does_not_factor():
    args = _args()
    torch.manual_seed(0)
    model = KodaForCausalLM(TINY)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    stepper = bench.build("frozen-hidden", 3e-3, model, args, lambda s: 1.0)
    g = torch.Generator().manual_seed(1)
    for _ in range(2):
        stepper.zero_grad()
        bench.loss_of(model, torch.randint(0, TINY.vocab_size, (2, 9), generator=g)).backward()
        stepper.step()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert {"lm_head.weight", "model.embed_tokens.weight"} <= moved
    assert not any(".self_attn." in n or ".experts." in n for n in moved)


def _cache_args(tmp_path, **kw):
    return SimpleNamespace(**{"preset": "smoke", "steps": 4, "warmup": 2, "batch": 2, "seq_len": 16, "eval_batches": 1,
                              "corpus_mb": 1.0, "kfac_factor_every": 1, "inv_every": 2, "kfac_skip": "lm_head",
                              "damping": 1e-3, "factor_decay": 0.95, "kfac_adamw_lr": None, "kl_clip": None,
                              "inverse_dtype": "auto", "kfac_update_rms": 0.2, "kfac_nesterov": False, "soap_every": 2,
                              "soap_max_dim": 1024, "eval_every": 2, "out": tmp_path, "fresh": False, **kw})


def test_cache_reruns_a_run_made_with_other_settings(tmp_path, monkeypatch):
    made = []

    def fake_run(name, lr, seed, args, batches, val):
        made.append((name, args.inv_every, args.eval_every))
        return {"name": name, "lr": lr, "seed": seed, "final_val_loss": 1.0, "diverged": False, "s_per_step": 0.1}

    monkeypatch.setattr(bench, "run", fake_run)
    no_data = lambda seed: (None, None)  # noqa: E731
    args = _cache_args(tmp_path)
    for name in ("adamw", "kfac-rms"):
        bench.cached_run(name, 1e-3, 1, args, no_data)
        bench.cached_run(name, 1e-3, 1, args, no_data)               # cached
    assert made == [("adamw", 2, 2), ("kfac-rms", 2, 2)]
    other = _cache_args(tmp_path, inv_every=4)                         # a K-FAC setting: AdamW's run stands
    bench.cached_run("adamw", 1e-3, 1, other, no_data)
    bench.cached_run("kfac-rms", 1e-3, 1, other, no_data)
    assert made[2:] == [("kfac-rms", 4, 2)]
    finer = _cache_args(tmp_path, inv_every=4, eval_every=1)          # cadence: only a curve needs it
    bench.cached_run("kfac-rms", 1e-3, 1, finer, no_data, curve=False)
    assert len(made) == 3
    bench.cached_run("kfac-rms", 1e-3, 1, finer, no_data, curve=True)
    assert made[3:] == [("kfac-rms", 4, 1)]
    assert not list(tmp_path.glob("runs/*.tmp"))


@pytest.mark.slow
def test_parallel_runs_give_the_one_process_results(tmp_path):
    """--jobs 2 (worker processes) returns every run under its own name, rate and seed, with the
    losses of the same runs made in one process (seeded, 1 thread: bit-identical)."""
    import json
    import subprocess
    import sys

    def bench_run(out, jobs):
        cmd = [sys.executable, str(bench.__file__), "--preset", "smoke", "--steps", "3", "--warmup", "1",
               "--batch", "1", "--seq-len", "16", "--eval-every", "3", "--eval-batches", "1", "--corpus-mb", "2",
               "--cache", str(tmp_path / "cache"), "--threads", "1", "--seeds", "1", "--jobs", str(jobs),
               "--optimizers", "adamw,kfac-rms", "--grid", "adamw=1e-3,3e-3", "--grid", "kfac-rms=1e-4,1e-3",
               "--out", str(out)]
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
        results = json.loads((out / "results.json").read_text())          # each run reported under its own name
        assert {k: [lr for lr, _ in v] for k, v in results["sweep"].items()} == {"adamw": [1e-3, 3e-3],
                                                                                  "kfac-rms": [1e-4, 1e-3]}
        runs = {p.stem: json.loads(p.read_text()) for p in (out / "runs").glob("*.json")}
        for name, points in results["sweep"].items():
            assert all(runs[f"{name}-lr{lr:g}-seed0"]["final_val_loss"] == loss for lr, loss in points)
        for row in results["table"]:
            assert row["final_val_loss"][0] == runs[f"{row['name']}-lr{row['lr']:g}-seed1"]["final_val_loss"]
        return runs

    one, two = bench_run(tmp_path / "one", 1), bench_run(tmp_path / "two", 2)
    sweep = {"adamw-lr0.001-seed0", "adamw-lr0.003-seed0", "kfac-rms-lr0.0001-seed0", "kfac-rms-lr0.001-seed0"}
    assert set(one) == set(two) and sweep < set(one)
    assert sorted(k.split("-lr")[0] for k in set(one) - sweep) == ["adamw", "kfac-rms"]     # seed 1 at the best
    for key, result in one.items():
        name, lr, seed = key.rsplit("-lr", 1)[0], *key.rsplit("-lr", 1)[1].split("-seed")
        assert (two[key]["name"], two[key]["lr"], two[key]["seed"]) == (name, float(lr), int(seed))
        assert two[key]["curve"][-1]["val_loss"] == result["curve"][-1]["val_loss"]
