"""Real 2-rank ZeRO-3 + AutoEP runs on CPU through DeepSpeed's launcher."""

import json
import os
import signal
import subprocess
import time

import pytest

from koda.distributed.local_launch import command, free_port
from tests.helpers.ranks import REPO, launch, rank_env, run_ranks
from tests.helpers.tiny import TINY, write_run_config

pytestmark = pytest.mark.slow


def _metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_engine_module_is_autoep_and_each_rank_holds_half_the_experts(tiny_data, tmp_path):
    config = write_run_config(tmp_path / "run.yaml", tiny_data, tmp_path / "run", steps=10)
    results = run_ranks("tests.helpers.rank_jobs:autoep_structure", {"config_path": str(config)}, tmp_path / "out")
    for result in results:
        assert result["layer_type"] == "AutoEPMoELayer"
        assert result["ep_size"] == 2
        assert result["local_experts"] == TINY.n_experts // 2
    held = [set(r["held"]) for r in results]
    assert len(held[0]) == 2 and len(held[1]) == 2 and not held[0] & held[1]


def test_two_rank_training_loss_falls_and_writes_everything(tiny_data, tmp_path):
    run_dir = tmp_path / "run"
    config = write_run_config(tmp_path / "run.yaml", tiny_data, run_dir, steps=40,
                              train={"eval_every": 20, "checkpoint_every": 20})
    proc = launch(["koda.train", "--config", str(config)])
    assert proc.returncode == 0, proc.stderr[-4000:]
    records = _metrics(run_dir)
    train = [r["train/ce"] for r in records if "train/ce" in r]
    val = [r["val/loss"] for r in records if "val/loss" in r]
    assert len(train) == 40 and len(val) == 3 and records[0]["step"] == 0    # untrained baseline first
    assert sum(train[-5:]) / 5 < sum(train[:5]) / 5 - 1.0
    assert val[0] > val[1] > val[2]
    last = records[-1]
    for key in ("train/lr", "train/grad_norm", "train/aux_loss", "perf/tokens_per_s", "perf/mfu",
                "moe/layer0/tokens", "moe/layer1/load_max_min", "mem/rss_gb"):
        assert key in last, key
    assert sum(last["moe/layer0/tokens"]) == 2 * 4 * 64 * 2      # ranks x micro x seq x top-k
    assert (run_dir / "checkpoints" / "latest").read_text() == "step00000040"
    assert (run_dir / "checkpoints" / "step00000040" / "COMPLETE").is_file()
    assert (run_dir / "checkpoints" / "step00000020" / "COMPLETE").is_file()


def _start(config, extra=()):
    cmd = command(2, free_port(), "koda.train", ["--config", str(config), *extra])
    return subprocess.Popen(cmd, cwd=REPO, env=rank_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True, text=True)


def test_kill_9_then_resume_reproduces_the_uninterrupted_losses_bit_for_bit(tiny_data, tmp_path):
    steps = {"train": {"checkpoint_every": 5, "eval_every": 40}}
    straight = write_run_config(tmp_path / "a.yaml", tiny_data, tmp_path / "a", steps=40, **steps)
    killed = write_run_config(tmp_path / "b.yaml", tiny_data, tmp_path / "b", steps=40, **steps)
    assert launch(["koda.train", "--config", str(straight)]).returncode == 0

    proc = _start(killed)
    metrics = tmp_path / "b" / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if metrics.is_file() and any(json.loads(x)["step"] >= 12 for x in metrics.read_text().splitlines()):
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"run ended before it could be killed: {proc.stderr.read()[-3000:]}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = [json.loads(x)["step"] for x in metrics.read_text().splitlines()]
    assert max(done) < 40, "the kill came too late to test anything"

    resumed = launch(["koda.train", "--config", str(killed), "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    a = {r["step"]: r for r in _metrics(tmp_path / "a")}
    b = {r["step"]: r for r in _metrics(tmp_path / "b")}
    assert sorted(b) == list(range(0, 41))
    for step in range(1, 41):
        for key in ("train/ce", "train/aux_loss", "train/grad_norm"):
            assert a[step][key] == b[step][key], (step, key, a[step][key], b[step][key])
    assert a[40]["val/loss"] == b[40]["val/loss"]
