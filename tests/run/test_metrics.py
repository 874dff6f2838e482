import json

from koda.config.run import LoggingConfig
from koda.run.metrics import METRICS_FILE, MetricsLogger, wandb_mode


def test_jsonl_stream_and_resume_truncation(tmp_path):
    cfg = LoggingConfig(wandb_mode="disabled", progress_bar=False)
    log = MetricsLogger(tmp_path, cfg, {}, 10, enabled=True)
    for step in range(1, 6):
        log.log(step, {"train/loss": 1.0 / step, "moe/layer0/tokens": [1, 2], "val/loss": float("nan")})
    log.close()
    lines = [json.loads(x) for x in (tmp_path / METRICS_FILE).read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3, 4, 5] and lines[0]["val/loss"] is None
    resumed = MetricsLogger(tmp_path, cfg, {}, 10, enabled=True, start_step=3)
    resumed.log(4, {"train/loss": 9.0})
    resumed.close()
    lines = [json.loads(x) for x in (tmp_path / METRICS_FILE).read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3, 4] and lines[-1]["train/loss"] == 9.0


def test_a_restart_from_step_0_rewrites_the_stream_instead_of_repeating_steps(tmp_path):
    cfg = LoggingConfig(wandb_mode="disabled", progress_bar=False)
    for _ in range(2):          # e.g. --resume with no checkpoint saved yet: the run starts over at 0
        log = MetricsLogger(tmp_path, cfg, {}, 10, enabled=True, start_step=0)
        for step in range(0, 3):
            log.log(step, {"train/loss": 1.0})
        log.close()
    steps = [json.loads(x)["step"] for x in (tmp_path / METRICS_FILE).read_text().splitlines()]
    assert steps == [0, 1, 2]


def test_disabled_logger_writes_nothing(tmp_path):
    MetricsLogger(tmp_path, LoggingConfig(), {}, 10, enabled=False).log(1, {"x": 1})
    assert not (tmp_path / METRICS_FILE).exists()


def test_wandb_defaults_to_offline_without_credentials(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert wandb_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_mode("auto") == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode("online") == "disabled"


def test_offline_wandb_run_is_written_and_keeps_its_id(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = LoggingConfig(wandb_mode="offline", progress_bar=False)
    log = MetricsLogger(tmp_path, cfg, {"model": {"d_model": 8}}, 3, enabled=True)
    log.log(1, {"train/loss": 2.0, "moe/layer0/tokens": [3, 4]})
    log.close()
    run_id = (tmp_path / "wandb_run_id").read_text()
    offline = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and offline[0].name.endswith(run_id)
