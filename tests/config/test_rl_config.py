import pytest

from koda.config import run as run_config
from koda.config.rl import RLConfig
from koda.errors import ConfigError
from koda.rl.rewards import RewardWeights


def _raw(**rl):
    return {"model": {"preset": "smoke"}, "ds_config": "x.json", "run_dir": "runs/x", "rl": rl}


def test_rl_section_loads_with_nested_reward_weights_and_overrides():
    cfg = run_config.from_dict(_raw(advantage="grpo", clip=None, rewards={"tests": 2.0, "failure": -3.0}))
    assert cfg.rl.advantage == "grpo" and cfg.rl.clip is None and not cfg.rl.uses_critic
    assert cfg.rl.rewards == RewardWeights(tests=2.0, failure=-3.0)
    raw = _raw()
    run_config._apply_override(raw, "rl.rewards.poincare=0.5")
    run_config._apply_override(raw, "rl.lvw=0")
    cfg = run_config.from_dict(raw)
    assert cfg.rl.rewards.poincare == 0.5 and not cfg.rl.uses_encoder
    assert run_config.from_dict(_raw()).rl == RLConfig()
    assert run_config.from_dict({**_raw(), "rl": cfg.to_dict()["rl"]}).rl == cfg.rl    # to_dict round trip


@pytest.mark.parametrize("rl, message", [
    ({"advantage": "ppo"}, "rl.advantage must be one of gae, grpo, rloo, got 'ppo'"),
    ({"advantage": "rloo", "samples_per_prompt": 1}, "needs rl.samples_per_prompt >= 2"),
    ({"lam": 1.5}, r"rl.lam must be <= 1, got 1.5"),
    ({"clip": 0}, "rl.clip must be > 0 or null"),
    ({"lce": 0, "lrl": 0, "lvw": 0}, "nothing would be trained"),
    ({"n_critic": 2.5}, "rl.n_critic must be an integer"),
    ({"kl_in": "both"}, "rl.kl_in must be 'reward' or 'loss'"),
    ({"rewards": {"test": 1.0}}, "rl.rewards: unknown key 'test'"),
    ({"rewards": {"similarity": -0.1}}, "rl.rewards.similarity must be >= 0"),
    ({"rollout_chunks": 5, "prompts_per_step": 4}, "rl.rollout_chunks 5 exceeds rl.prompts_per_step 4"),
    ({"top_p": 0}, r"rl.top_p must be in \(0, 1\]"),
    ({"top_k": -1}, "rl.top_k must be >= 0"),
    ({"rollout_experts": "sharded"}, "rl.rollout_experts must be one of local, parallel, got 'sharded'"),
    ({"critic_ds_config": ""}, "rl.critic_ds_config must be a DeepSpeed config"),
    ({"gp_lamda": 10}, "rl: unknown key 'gp_lamda' \\(did you mean 'gp_lambda'\\?\\)"),
])
def test_bad_rl_values_are_one_line_errors(rl, message):
    with pytest.raises(ConfigError, match=message):
        run_config.from_dict(_raw(**rl))


def test_which_engines_a_config_needs():
    assert not RLConfig(lrl=0, lvw=0).uses_rollouts                    # CE alone: nothing generated
    assert RLConfig(lrl=0, lvw=0.1).uses_rollouts and not RLConfig(lrl=0, lvw=0.1).uses_reference
    assert RLConfig().uses_reference and not RLConfig(kl_coef=0).uses_reference
    assert not RLConfig(advantage="grpo").uses_critic


def test_time_budget_is_validated():
    raw = {**_raw(), "train": {"time_budget_s": -1}}
    with pytest.raises(ConfigError, match="train.time_budget_s must be a positive number"):
        run_config.from_dict(raw)
    assert run_config.from_dict({**_raw(), "train": {"time_budget_s": 60}}).train.time_budget_s == 60


def test_reference_plan_has_no_optimizer_and_keeps_autoep():
    from koda.distributed import ds_config
    from koda.model import preset
    from koda.rl.engines import rl_plans

    plans = rl_plans(ds_config.load("zero3_ep_rl_smoke.json"), preset("smoke"), 2, 50, RLConfig())
    ref = plans["reference"]
    assert "optimizer" not in ref.config and "scheduler" not in ref.config
    assert ref.ep_size == plans["actor"].ep_size == 2 and ref.zero_stage == 3
    assert "optimizer" in plans["actor"].config and plans["encoder"].zero_stage == 2


def test_rl_stage_refuses_the_pretraining_optimizer_section(tmp_path):
    import yaml

    from koda.errors import KodaError
    from koda.train.cli import main

    path = tmp_path / "rl.yaml"
    path.write_text(yaml.safe_dump({"model": {"preset": "smoke"}, "ds_config": "zero3_ep_rl_smoke.json",
                                    "run_dir": str(tmp_path / "run"), "optimizer": {"name": "adamw", "lr": 1e-3}}))
    with pytest.raises(KodaError, match=r"^optimizer.lr is read by --stage pretrain only; --stage rl would ignore it"):
        main(["--stage", "rl", "--config", str(path), "--random-weights"])


def test_rl_stage_without_init_from_is_refused_unless_random_weights_are_asked_for(tmp_path):
    from koda.errors import KodaError
    from koda.train.cli import main

    args = ["--stage", "rl", "--config", "rl_smoke", "--run-dir", str(tmp_path / "run"),
            "--set", "ds_config=no_such_plan.json"]
    with pytest.raises(KodaError, match=r"^--stage rl needs --init-from RUN_OR_CKPT .* --random-weights"):
        main(args)
    # asked for by name, the run goes past that check (and stops at the next one: the missing plan)
    with pytest.raises(Exception, match="no_such_plan"):
        main([*args, "--random-weights"])
    with pytest.raises(KodaError, match="contradict"):
        from koda.rl.stage import check_source

        check_source("runs/x", True)


@pytest.mark.parametrize(("stage", "override", "owner"), [
    ("rl", "isometry.ortho_lambda=0.1", "pretrain"), ("rl", "train.feedback=dfa", "pretrain"),
    ("rl", "train.eval_batches=3", "pretrain"), ("pretrain", "rl.kl_coef=0.1", "rl")])
def test_a_field_only_the_other_stage_reads_is_refused_in_one_line(stage, override, owner):
    from koda.errors import ConfigError

    preset = {"rl": "rl_smoke", "pretrain": "smoke"}
    cfg = run_config.load(preset[stage], [override])
    with pytest.raises(ConfigError, match=rf"^{override.split('=')[0]} is read by --stage {owner} only; "
                                          rf"--stage {stage} would ignore it \(remove it from the config\)$"):
        run_config.refuse_unread(cfg, stage)
    run_config.refuse_unread(run_config.load(preset[stage]), stage)     # the preset alone is accepted
    run_config.refuse_unread(run_config.load(preset[owner], [override]), owner)   # its reader takes it


@pytest.mark.parametrize("name", ["rl_smoke", "rl_warm_start"])
def test_shipped_rl_preset_resolves_all_its_plans(name):
    from koda.rl.stage import check_config

    cfg = run_config.load(name)
    check_config(cfg, cfg.world_size)
    run_config.refuse_unread(cfg, "rl")
    if name == "rl_smoke":       # the hybrid objective whole: every engine
        assert cfg.rl.uses_critic and cfg.rl.uses_encoder and cfg.rl.uses_reference


def test_rl_compare_variants_build_the_engines_the_issue_names():
    """tools/rl_compare.py: (a) CE only generates nothing; (b) GRPO has neither critic nor
    encoder; (c) GAE has the critic; (d) adds the encoder. All RL variants keep the reference."""
    from tests.helpers.tools import load_tool

    variants = load_tool("rl_compare").VARIANTS
    built = {}
    for name, (_, overrides) in variants.items():
        rl = run_config.load("rl_warm_start", overrides).rl
        built[name] = (rl.uses_rollouts, rl.uses_critic, rl.uses_encoder, rl.uses_reference)
    assert built == {"a": (False, False, False, False), "b": (True, False, False, True),
                     "c": (True, True, False, True), "d": (True, True, True, True)}


def test_rl_task_families_names_the_families_to_train_on():
    from koda.errors import ConfigError

    cfg = run_config.load("rl_warm_start", ["rl.task_families=[power_open,recurrence_open]"])
    assert cfg.rl.task_families == ("power_open", "recurrence_open")
    assert run_config.load("rl_warm_start").rl.task_families is None          # the default task set
    with pytest.raises(ConfigError, match=r"^rl.task_families: unknown task family 'nope'"):
        run_config.load("rl_warm_start", ["rl.task_families=[nope]"])
    with pytest.raises(ConfigError, match=r"^rl.task_families must be a list"):
        run_config.load("rl_warm_start", ["rl.task_families=power_open"])
