"""``koda.report.variants``: a sweep's variant is a real ``koda train`` run, read back as a report Run."""

import sys

import pytest

from koda.report.variants import VariantFailed, run_variant, train_command
from tests.helpers.ranks import REPO, rank_env
from tests.helpers.tiny import write_run_config


def test_command_puts_the_callers_overrides_after_the_quiet_ones():
    cmd = train_command("smoke", "runs/x", ["logging.progress_bar=true", "moe.aux_loss_weight=0"], stage="rl",
                        steps=3, init_from="runs/src", extra_args=["--world-size", "2"])
    assert cmd[:4] == [sys.executable, "-m", "koda", "train"]
    assert cmd[4:] == ["--stage", "rl", "--config", "smoke", "--run-dir", "runs/x", "--steps", "3",
                       "--init-from", "runs/src", "--set", "logging.wandb_mode=disabled",
                       "--set", "logging.progress_bar=false", "--set", "logging.progress_bar=true",
                       "--set", "moe.aux_loss_weight=0", "--world-size", "2"]
    bare = train_command("smoke", "r", quiet=False)
    assert "--steps" not in bare and "--init-from" not in bare and "--set" not in bare


def test_a_failed_variant_raises_with_what_koda_train_printed(tmp_path):
    with pytest.raises(VariantFailed, match="failed \\(exit 2\\)") as err:
        run_variant("smoke", tmp_path / "bad", ["model.no_such_field=1"], env=rank_env(), capture=True)
    assert "no_such_field" in err.value.output


@pytest.mark.slow
def test_a_variant_trains_with_its_overrides_and_is_read_back(tiny_data, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    config = write_run_config(tmp_path / "tiny.yaml", tiny_data, tmp_path / "unused", steps=4)
    run = run_variant(str(config), tmp_path / "variant", ["train.eval_every=1", "train.log_every=2"], steps=2,
                      env=rank_env(), capture=True)
    assert run.path == tmp_path / "variant"
    assert run.scalars["val/loss"].steps == (0, 1, 2)         # evaluated every step, and only 2 steps
    assert run.scalars["train/ce"].steps == (2,)               # logged every 2nd step
    assert run.config["train"]["steps"] == 2
