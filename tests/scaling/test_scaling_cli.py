"""Reading (compute, loss) points from a fabricated run directory and from tables, and
``koda scaling`` end to end: table, JSON, plot, one-line errors."""

import json

import numpy as np
import pytest

from koda import cli
from koda.errors import KodaError
from koda.model.config import ModelConfig
from koda.run.flops import train_flops_per_token
from koda.scaling.points import read_run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MODEL = ModelConfig(vocab_size=512, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=96,
                    n_experts=4, top_k=2, max_seq_len=128)


def write_run(path, val_steps=(0, 20, 40, 60), batch=12, seq_len=96):
    """A run directory as the trainer leaves it: config.json, ds_config.json (micro-batch 3 x
    accumulation 2 x 2 ranks = 12 sequences per step) and metrics.jsonl with validations at
    `val_steps` among training lines."""
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model": MODEL.to_dict(), "data": {"seq_len": seq_len}}))
    (path / "ds_config.json").write_text(json.dumps({"train_batch_size": batch, "train_micro_batch_size_per_gpu": 3,
                                                     "gradient_accumulation_steps": 2}))
    lines = []
    for step in range(0, max(val_steps, default=0) + 1, 10):
        record = {"step": step, "time": 1000.0 + step}
        if step:
            record.update({"train/loss": 5.0 - step / 100, "perf/tokens_per_s": 900.0})
        if step in val_steps:
            record.update({"val/loss": 6.0 / (1 + step) ** 0.1, "val/ppl": 1.0})
        lines.append(json.dumps(record))
    (path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return path


def test_a_run_directory_gives_compute_from_global_batch_seq_len_and_flops(tmp_path):
    points = read_run(write_run(tmp_path / "run"))
    per_token = train_flops_per_token(MODEL, 96)
    assert points.steps == (20, 40, 60)                    # the step-0 baseline has no compute
    assert points.tokens_per_step == 12 * 96               # global batch, not the micro-batch of 3
    np.testing.assert_allclose(points.compute, [s * 12 * 96 * per_token for s in (20, 40, 60)], rtol=1e-12)
    np.testing.assert_allclose(points.loss, [6.0 / 21**0.1, 6.0 / 41**0.1, 6.0 / 61**0.1])


def test_a_run_without_validation_points_is_one_line(tmp_path):
    run = write_run(tmp_path / "run", val_steps=(0,))
    with pytest.raises(KodaError, match="no val/loss after step 0"):
        read_run(run)
    (run / "ds_config.json").unlink()
    run2 = write_run(tmp_path / "run2")
    (run2 / "ds_config.json").unlink()
    with pytest.raises(KodaError, match="no ds_config.json"):
        read_run(run2)


def _koda(capsys, *argv):
    code = cli.main(["scaling", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_fits_a_table_writes_json_and_plot(tmp_path, capsys):
    x = np.linspace(14.0, 18.0, 24)
    y = 1.5 - 0.03 * x - 0.09 * np.maximum(0.0, x - 16.0)          # one breakpoint at 1e16
    table = tmp_path / "points.csv"
    rows = "".join(f"{float(10**a)!r},{float(10**b)!r}\n" for a, b in zip(x, y, strict=True))
    table.write_text("compute,loss\n" + rows)
    out_json, plot = tmp_path / "fit.json", tmp_path / "plots" / "fit.png"
    code, out, err = _koda(capsys, table, "--predict", "1e19,1e20", "--out", out_json, "--plot", plot)
    assert code == 0, err
    fit = json.loads(out_json.read_text())
    assert fit["k"] == 1 and fit["breakpoints_chosen_by"] == "bic"
    assert fit["breakpoints_compute"][0] == pytest.approx(1e16, rel=0.02)
    assert [s["b"] for s in fit["segments"]] == pytest.approx([0.03, 0.12], abs=1e-6)
    expected = [10 ** (1.5 - 0.03 * c - 0.09 * (c - 16.0)) for c in (19.0, 20.0)]
    assert [p["loss"] for p in fit["predictions"]] == pytest.approx(expected, rel=1e-6)
    assert plot.read_bytes().startswith(PNG_SIGNATURE)
    assert "predicted loss" in out and "1e+19" in out


def test_cli_reads_run_directories(tmp_path, capsys):
    runs = [write_run(tmp_path / name, val_steps=tuple(range(0, 101, 10)), batch=b)
            for name, b in (("a", 12), ("b", 24))]
    code, out, err = _koda(capsys, *runs, "--breakpoints", "0", "--out", tmp_path / "fit.json")
    assert code == 0, err
    fit = json.loads((tmp_path / "fit.json").read_text())
    assert fit["n_points"] == 20 and fit["breakpoints_chosen_by"] == "user"
    assert [len(i["points"]) for i in fit["inputs"]] == [10, 10]
    assert fit["inputs"][1]["tokens_per_step"] == 24 * 96


@pytest.mark.parametrize("content, message", [
    ("compute,loss\n1e15,3.0\n1e16,0\n1e17,2.0\n", "line 3 loss: '0' must be positive"),
    ("compute,loss\n1e15,3.0\n-1e16,2.5\n1e17,2.0\n", "line 3 compute: '-1e16' must be positive"),
    ("flops,loss\n1e15,3.0\n", "needs columns compute and loss"),
    ("compute,loss\n1e15,3.0\n1e16,2.5\n1e17,2.0\n", "3 points are fewer than the 4 parameters"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys, content, message):
    table = tmp_path / "bad.csv"
    table.write_text(content)
    code, out, err = _koda(capsys, table, "--breakpoints", "1")
    assert code == 2
    assert message in err and err.count("\n") == 1 and err.startswith("koda scaling: error:")


def test_cli_run_without_validation_is_one_line(tmp_path, capsys):
    code, _, err = _koda(capsys, write_run(tmp_path / "run", val_steps=(0,)))
    assert code == 2 and "no val/loss after step 0" in err and err.count("\n") == 1
