"""Every config validation error is one line naming the field, raised before any rank starts."""

import dataclasses

import pytest
import yaml

from koda.config import run as run_config
from koda.errors import ConfigError

BASE = {"model": {"preset": "smoke"}, "ds_config": "zero3_ep_smoke.json", "run_dir": "runs/x"}

BAD_RUN_CONFIGS = [
    ({"modle": {}}, r"run config: unknown key 'modle' \(did you mean 'model'\?\)"),
    ({"train": {"stpes": 3}}, r"train: unknown key 'stpes' \(did you mean 'steps'\?\)"),
    ({"train": {"steps": 0}}, r"train.steps must be a positive integer, got 0"),
    ({"model": {"preset": "huge"}}, r"model.preset 'huge' is not one of smoke, small, large"),
    ({"model": {"preset": "smoke", "n_heads": 3}}, r"model.n_heads 3 does not divide model.d_model 128"),
    ({"model": {"preset": "smoke", "n_kv_heads": 3}}, r"model.n_kv_heads 3 does not divide model.n_heads 4"),
    ({"model": {"preset": "smoke", "top_k": 5}}, r"model.top_k 5 exceeds model.n_experts 4"),
    ({"model": {"preset": "smoke", "colour": 1}}, r"model: unknown key 'colour'"),
    ({"data": {"seq_len": 4096}}, r"data.seq_len 4096 exceeds model.max_seq_len 256"),
    ({"data": {"val_fraction": 0.9}}, r"data.val_fraction must be in \(0, 0.5\)"),
    ({"data": {"windows": "docs"}}, r"data.windows must be 'fixed' or 'documents', got 'docs'"),
    ({"moe": {"aux_loss_weight": -1}}, r"moe.aux_loss_weight must be >= 0"),
    ({"logging": {"wandb_mode": "loud"}}, r"logging.wandb_mode must be auto, online, offline or disabled"),
    ({"world_size": 0}, r"world_size must be a positive integer"),
    ({"train": {"on_nonfinite": "ignore"}}, r"train.on_nonfinite must be stop or skip, got 'ignore'"),
    ({"optimizer": {"name": "lion"}}, r"optimizer.name must be 'adamw', 'kfac' or 'muon', got 'lion'"),
    ({"optimizer": {"kfac": {"kl_clip": -1}}}, r"optimizer.kfac.kl_clip must be > 0 or null"),
    ({"optimizer": [1]}, r"optimizer must be a mapping"),
]


def test_optimizer_section_parses(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({**BASE, "optimizer": {"name": "kfac", "kfac": {"inv_update_steps": 20,
                                                                                   "skip": ["lm_head", "gate$"]}}}))
    cfg = run_config.load(str(path))
    assert cfg.optimizer.name == "kfac" and cfg.optimizer.kfac.inv_update_steps == 20
    assert cfg.optimizer.kfac.skip == ("lm_head", "gate$")
    assert run_config.load(str(tmp_path / "run.yaml"), ["optimizer.kfac.damping=0.01"]).optimizer.kfac.damping == 0.01


def test_no_optimizer_section_means_the_deepspeed_optimizer(tmp_path):
    """Absent, the DeepSpeed config's optimizer runs; a section with every default still selects
    KODA's (AdamW rule), so the two are told apart by presence, not by value."""
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(BASE))
    assert run_config.load(str(path)).optimizer is None
    path.write_text(yaml.safe_dump({**BASE, "optimizer": {}}))
    assert run_config.load(str(path)).optimizer.name == "adamw"


@pytest.mark.parametrize(("change", "message"), BAD_RUN_CONFIGS)
def test_bad_run_config(tmp_path, change, message):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({**BASE, **change}))
    with pytest.raises(ConfigError, match=message) as err:
        run_config.load(str(path))
    assert "\n" not in str(err.value)


def test_presets_load_and_overrides_apply():
    cfg = run_config.load("smoke", ["train.steps=7", "moe.aux_loss_weight=0", "model.n_experts=8"])
    assert cfg.train.on_nonfinite == "stop"
    assert run_config.load("smoke", ["train.on_nonfinite=skip"]).train.on_nonfinite == "skip"
    assert cfg.train.steps == 7 and cfg.moe.aux_loss_weight == 0 and cfg.model.n_experts == 8
    assert run_config.load("small").model.d_model == 512
    assert run_config.load("large").model.n_layers == 32


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model:\n  preset: smoke\n bad indent: [\n")
    with pytest.raises(ConfigError, match=r"invalid YAML at line \d"):
        run_config.load(str(path))


def test_cli_reports_config_errors_as_one_line(capsys):
    from koda.cli import main

    assert main(["train", "--config", "smoke", "--set", "model.n_heads=5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "koda train: error: model.n_heads 5 does not divide model.d_model 128"


def test_presets_match_their_ds_configs():
    """Every shipped run config resolves against its ds_config at its own world size."""
    from koda.distributed import ds_config

    shipped = sorted(p.stem for p in run_config.PRESET_DIR.glob("*.yaml"))
    assert {"smoke", "smoke_muon", "smoke_kfac", "small", "small_kfac", "large", "warm_start"} <= set(shipped)
    for name in [n for n in shipped if not n.startswith("rl_")]:    # rl_*: tests/config/test_rl_config.py
        cfg = run_config.load(name)
        plan = ds_config.resolve(ds_config.load(cfg.ds_config), model=cfg.model, world_size=cfg.world_size,
                                 train_steps=cfg.train.steps, bf16_supported=True)
        resolved, ep = plan.config, plan.config["expert_parallel"]
        assert plan.world == cfg.world_size and plan.global_batch == resolved["train_batch_size"], name
        assert resolved["train_batch_size"] == plan.micro_batch * plan.grad_accum * cfg.world_size, name
        assert plan.ep_size == ep["autoep_size"], name
        assert cfg.world_size % plan.ep_size == 0 and cfg.model.n_experts % plan.ep_size == 0, name
        assert ep["top_k"] == cfg.model.top_k, name
        assert resolved["scheduler"]["params"]["total_num_steps"] == cfg.train.steps, name


def test_smoke_kfac_ships_the_benchmarks_tuned_kfac():
    """koda/configs/smoke_kfac.yaml: bench_optim's kfac-rms at its chosen rate and schedule."""
    cfg, smoke = run_config.load("smoke_kfac"), run_config.load("smoke")
    assert (cfg.optimizer.name, cfg.optimizer.lr) == ("kfac", 3e-4)
    k = cfg.optimizer.kfac
    assert (k.update_rms, k.kl_clip, k.adamw_lr, k.factor_update_steps, k.inv_update_steps, k.inverse_dtype) == (
        0.2, None, 3e-3, 5, 25, "auto")
    assert cfg.model == smoke.model and cfg.data == smoke.data and cfg.train == smoke.train


def test_small_kfac_ships_the_benchmarks_tuned_kfac_for_small():
    """koda/configs/small_kfac.yaml: bench_optim's kfac-rms on small (dense layers factored, the
    experts left to AdamW) at its chosen rates, on the small run."""
    cfg, small = run_config.load("small_kfac"), run_config.load("small")
    assert (cfg.optimizer.name, cfg.optimizer.lr) == ("kfac", 1e-4)
    k = cfg.optimizer.kfac
    assert (k.update_rms, k.kl_clip, k.adamw_lr, k.factor_update_steps, k.inv_update_steps, k.skip) == (
        0.2, None, 1e-3, 5, 25, ("lm_head", "experts"))
    assert cfg.model == small.model and cfg.data == small.data and cfg.train == small.train


def test_a_bare_kfac_section_gets_the_benchmarks_tuned_schedule_and_step_rule():
    """``optimizer: {name: kfac}`` alone is what smoke_kfac.yaml sets (less its rates): the KL clip
    the benchmark found useless is opt-in, and asking for it alone says what else to set."""
    from koda.optim.config import OptimizerConfig

    bare, tuned = OptimizerConfig.from_dict({"name": "kfac"}).kfac, run_config.load("smoke_kfac").optimizer.kfac
    assert bare == dataclasses.replace(tuned, adamw_lr=None)
    assert (bare.update_rms, bare.kl_clip, bare.factor_update_steps, bare.inv_update_steps, bare.inverse_dtype) == (
        0.2, None, 5, 25, "auto")
    with pytest.raises(ConfigError, match="set update_rms: null to use kl_clip"):
        OptimizerConfig.from_dict({"name": "kfac", "kfac": {"kl_clip": 1e-3}})
    clipped = OptimizerConfig.from_dict({"name": "kfac", "kfac": {"kl_clip": 1e-3, "update_rms": None}}).kfac
    assert (clipped.kl_clip, clipped.update_rms) == (1e-3, None)


def test_smoke_muon_ships_the_benchmarks_tuned_muon():
    """koda/configs/smoke_muon.yaml: the smoke run with Muon at tools/bench_optim.py's chosen rate,
    on a DeepSpeed schedule of ratios (an absolute warmup_max_lr would be refused next to it)."""
    from koda.distributed import ds_config

    cfg, smoke = run_config.load("smoke_muon"), run_config.load("smoke")
    assert (cfg.optimizer.name, cfg.optimizer.lr) == ("muon", 0.01)
    assert cfg.model == smoke.model and cfg.data == smoke.data and cfg.train == smoke.train
    scheduler = ds_config.load(cfg.ds_config)["scheduler"]
    assert scheduler["type"] == "WarmupCosineLR" and "warmup_max_lr" not in scheduler["params"]
