"""The summary rows: config highlights from the files the trainer writes, and headline results."""

from koda.model.config import PRESETS
from koda.report.runs import load_run
from koda.report.summary import parameter_counts, summarize
from tests.report.synthetic import final_val_loss, write_run


def test_rows_of_a_full_run(tmp_path):
    rows = dict(summarize(load_run(write_run(tmp_path / "a", steps=40))))
    assert rows["model"] == "smoke (4 layers, d_model 128, 4 experts top-2)"
    assert rows["parameters"].startswith("2.82M total")
    assert rows["world size"] == "2"                      # 16 = micro 4 x accumulation 2 x 2 ranks
    assert rows["ZeRO"] == "stage 3"
    assert rows["expert parallel"] == "AutoEP size 2"
    assert rows["precision"] == "bf16"
    assert rows["steps logged"] == "40 of 40"
    assert rows["final val loss"] == f"{final_val_loss(40):.4f} (step 40)"
    assert rows["best val loss"] == rows["final val loss"]       # the synthetic loss only falls
    assert rows["MFU (median)"] == "25.0%"
    assert rows["wall time (first to last log)"] == "0:01:16"


def test_offload_and_custom_model(tmp_path):
    path = write_run(tmp_path / "a")
    config = (path / "config.json").read_text().replace('"n_experts": 4', '"n_experts": 8')
    (path / "config.json").write_text(config)
    ds = (path / "ds_config.json").read_text().replace('"stage": 3}', '"stage": 3, "offload_optimizer": '
                                                       '{"device": "cpu"}}')
    (path / "ds_config.json").write_text(ds)
    rows = dict(summarize(load_run(path)))
    assert rows["model"].startswith("custom (4 layers, d_model 128, 8 experts")
    assert rows["ZeRO"] == "stage 3, offload optimizer to cpu"


def test_without_config_files_only_results_remain(tmp_path):
    rows = dict(summarize(load_run(write_run(tmp_path / "a", configs=False))))
    assert "model" not in rows and "ZeRO" not in rows
    assert rows["steps logged"] == "40"


def test_parameter_counts_cover_the_large_preset_without_memory():
    total, active = parameter_counts(PRESETS["large"].to_dict())
    assert 46e9 < total < 48e9 and 12e9 < active < 14e9
    assert parameter_counts({"n_layers": "many"}) is None


def test_config_of_an_unexpected_layout_costs_only_its_highlights(tmp_path):
    path = write_run(tmp_path / "a")
    (path / "ds_config.json").write_text('{"zero_optimization": "three", "train_batch_size": 8}')
    run = load_run(path)
    rows = dict(summarize(run))
    assert "ZeRO" not in rows and rows["model"].startswith("smoke")
    assert run.warnings == ["ds_config.json has an unexpected layout (AttributeError): its highlights are left out"]
