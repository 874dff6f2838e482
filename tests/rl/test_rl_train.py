"""``koda train --stage rl`` end to end on two ranks, then kill -9 and ``--resume``.

The TINY actor (ZeRO-3 + AutoEP) starts from a converted model (``--init-from``), with the
critic, the encoder and the frozen reference policy; two PPO epochs and two rollout chunks
per step. The uninterrupted run's metrics are the reference: a run killed with SIGKILL after
its step-2 checkpoint must resume at step 2 (without ``--init-from``: the reference policy is
rebuilt from the source the checkpoint names) and log exactly the same values, step by step.
A resume that restarted from step 0, lost the advantage tracker or drew new rollouts would
differ in its rewards, advantages or losses.
"""

import json
import re

import psutil
import pytest
import torch

from koda.distributed import checkpoint
from koda.rl.rewards import COMPONENTS
from tests.helpers.tiny import TINY, write_run_config
from tests.train.test_kill_resume import _kill_job, _lines, _start, _steps, _train, _wait_until

pytestmark = pytest.mark.slow
STEPS = 4
TIMED = re.compile(r"^(time/.*|perf/.*)$")
RL = {"prompts_per_step": 2, "samples_per_prompt": 2, "max_new_tokens": 8, "n_critic": 1, "ppo_epochs": 2,
      "rollout_chunks": 2, "judge_budget_s": 0.5, "judge_workers": 1, "tasks_train": 1, "tasks_heldout": 1,
      "probe_tasks": 2, "probe_max_new_tokens": 8, "kl_coef": 0.05, "encoder_dim": 32}
PROBE = {"val/heldout_ce", "probe/pass_rate", "probe/complexity_met", "probe/syntax_valid"}
EXPECTED = ({f"rl/reward/{c}" for c in (*COMPONENTS, "total", "failed")}
            | {"rl/policy_loss", "rl/value_loss", "rl/kl", "rl/kl_ref", "rl/entropy", "rl/ce", "rl/clip_fraction",
               "gan/wasserstein", "gan/gp", "gan/generator_loss", "perf/rollout_tokens_per_s", "time/judge_wait",
               "perf/judge_hidden_fraction"}
            | {f"time/{t}" for t in ("generation", "judging", "reference_fwd", "actor_fwd", "actor_bwd",
                                      "critic_fwd", "critic_bwd", "encoder_fwd", "encoder_bwd")})


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    from koda.checkpoint import save_standalone
    from koda.model import KodaForCausalLM

    torch.manual_seed(11)
    out = tmp_path_factory.mktemp("source") / "model"
    save_standalone(KodaForCausalLM(TINY), out)
    return out


def _config(root, tiny_data, checkpoint_every):
    return write_run_config(root / "rl.yaml", tiny_data, root / "run", steps=STEPS, rl=RL,
                            train={"checkpoint_every": checkpoint_every, "eval_every": 100})


@pytest.fixture(scope="module")
def straight(tiny_data, source, tmp_path_factory):
    root = tmp_path_factory.mktemp("rl-straight")
    proc = _train(_config(root, tiny_data, STEPS), "--stage", "rl", "--init-from", str(source))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root / "run", proc.stdout, [json.loads(line) for line in _lines(root / "run")]


def test_every_component_is_logged_each_step(straight):
    _, stdout, records = straight
    assert "weights from" in stdout and "reference (frozen)" in stdout
    assert [r["step"] for r in records] == list(range(STEPS + 1))
    baseline, records = records[0], records[1:]
    # the held-out evaluation (CE and the greedy probe) before the first step and after the last
    assert set(baseline) - {"step", "time"} == PROBE and set(records[-1]) >= PROBE, (baseline, records[-1])
    assert all(0.0 <= r[k] <= 1.0 for r in (baseline, records[-1]) for k in PROBE - {"val/heldout_ce"})
    # rank 0's first prompt group of every logged step, as the judge scored it
    rollouts = [json.loads(line) for line in (straight[0] / "rollouts.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rollouts] == list(range(1, STEPS + 1))
    for r in rollouts:
        assert len(r["samples"]) == RL["samples_per_prompt"], r
        assert all({"task_id", "completion", "reward", "status", *COMPONENTS} <= set(s) for s in r["samples"]), r
    for r in records:
        assert set(r) >= EXPECTED, EXPECTED - set(r)
        assert all(v is not None for k, v in r.items() if k in EXPECTED), r     # None: logged non-finite
    # the actor starts as the reference: bf16 forwards of two engines agree to ~1e-5 (CPU-dependent)
    assert abs(records[0]["rl/kl_ref"]) < 5e-5
    assert any(abs(r["rl/kl_ref"]) > 1e-4 for r in records[1:])   # ... and the updates move it away
    assert any(r["rl/clip_fraction"] > 0 or r["rl/kl"] > 0 for r in records)   # epoch 2 sees a moved policy


def test_checkpoint_holds_every_engine_and_the_tracker(straight):
    run_dir, _, _ = straight
    ckpt = run_dir / "checkpoints"
    tag = checkpoint.resolve_tag(ckpt)
    record = checkpoint.verify(ckpt, tag)
    assert record["engines"] == ["actor", "critic", "encoder"] and record["extra"] == ["rl"]
    state = checkpoint.read_extra(ckpt, tag, "rl")
    assert state["step"] == STEPS and state["init_from"]
    moments = state["step_state"]["advantage_moments"]
    assert float(moments["count"]) > 0


def test_kill_9_then_resume_reproduces_the_uninterrupted_run(straight, source, tiny_data, tmp_path):
    _, _, reference = straight
    config = _config(tmp_path, tiny_data, checkpoint_every=2)
    run_dir, log = tmp_path / "run", tmp_path / "log"
    proc = _start(config, log, "--stage", "rl", "--init-from", str(source))
    _wait_until(proc, log, lambda: max(_steps(run_dir), default=0) >= 3, "RL step 3", timeout=600)
    _kill_job(proc)
    assert not [p for p in psutil.process_iter(["cmdline"]) if str(config) in " ".join(p.info["cmdline"] or [])]
    assert checkpoint.resolve_tag(run_dir / "checkpoints") == checkpoint.tag_for(2)
    resumed = _train(config, "--stage", "rl", "--resume")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resumed at step 2" in resumed.stdout
    records = [json.loads(line) for line in _lines(run_dir)]
    assert [r["step"] for r in records] == list(range(STEPS + 1))
    for mine, theirs in zip(records, reference, strict=True):
        keys = {k for k in theirs if not TIMED.match(k)} - {"time"}
        assert {k for k in mine if not TIMED.match(k)} - {"time"} == keys
        for key in keys:
            assert mine[key] == theirs[key], (mine["step"], key, mine[key], theirs[key])


def test_resuming_an_rl_run_as_pretraining_is_refused_before_any_rank_starts(straight):
    from koda.errors import KodaError
    from koda.train.cli import main

    run_dir, _, _ = straight
    config = run_dir.parent / "rl.yaml"
    with pytest.raises(KodaError, match="written by the rl stage; resume it with --stage rl"):
        main(["--config", str(config), "--resume"])
