"""``koda report`` end to end: files written, the page, comparison, and one-line errors."""

import pytest

from koda import cli
from koda.report import build
from tests.report.synthetic import final_val_loss, write_run
from tests.report.test_plots import FULL_RUN

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _koda(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main(["report", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_single_run_writes_plots_and_a_self_contained_page(tmp_path, capsys):
    run = write_run(tmp_path / "run", steps=40)
    code, out, err = _koda(capsys, run)
    assert code == 0 and err == ""
    report = run / "report"
    pngs = sorted(report.glob("*.png"))
    assert [p.stem for p in pngs] == sorted(FULL_RUN)
    for png in pngs:
        data = png.read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 5000
    page = (report / "index.html").read_text()
    for png in pngs:
        assert f'href="{png.name}"' in page
    assert page.count("data:image/png;base64,") == len(pngs)
    assert f"{final_val_loss(40):.4f}" in page
    assert "<script" not in page and "http://" not in page and "https://" not in page
    assert sorted(p.name for p in report.iterdir()) == sorted([p.name for p in pngs] + ["index.html"])
    assert out.strip() == f"wrote {len(pngs)} plots and {report / 'index.html'}"


def test_two_runs_need_output_then_compare(tmp_path, capsys):
    a = write_run(tmp_path / "a", steps=20)
    b = write_run(tmp_path / "b", steps=40, offset=0.5, rl=True)
    code, _, err = _koda(capsys, a, b)
    assert code == 2
    assert err == "koda report: error: 2 runs given: say where the comparison goes with --output DIR\n"
    code, _, _ = _koda(capsys, a, b, "--output", tmp_path / "cmp")
    assert code == 0
    page = (tmp_path / "cmp" / "index.html").read_text()
    assert "KODA run comparison: a, b" in page
    assert f"{final_val_loss(20):.4f}" in page and f"{final_val_loss(40, 0.5):.4f}" in page
    assert "group_rl.png" in page


def test_truncated_line_is_a_warning(tmp_path, capsys):
    run = write_run(tmp_path / "killed", steps=10)
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 12, "tra')
    code, _, err = _koda(capsys, run, "-o", tmp_path / "out")
    assert code == 0
    assert err == "koda report: warning: killed: last line 6 is truncated (run killed mid-write?): skipped\n"
    assert "last line 6 is truncated" in (tmp_path / "out" / "index.html").read_text()


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: None, "run directory {p} does not exist"),
    (lambda p: (p.mkdir(), (p / "metrics.jsonl").touch()), "{p}/metrics.jsonl is empty: nothing to report"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, make, message):
    good = write_run(tmp_path / "good")
    make(tmp_path / "bad")
    code, out, err = _koda(capsys, good, tmp_path / "bad", "-o", tmp_path / "out")
    assert code == 2 and out == ""
    assert err == f"koda report: error: {message.format(p=tmp_path / 'bad')}\n"
    assert not (tmp_path / "out").exists()


def test_output_that_is_a_file(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    code, _, err = _koda(capsys, write_run(tmp_path / "a"), "-o", tmp_path / "file")
    assert code == 2 and err == f"koda report: error: output {tmp_path / 'file'} exists and is not a directory\n"


def test_interrupted_report_keeps_the_previous_page(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1, "val/loss": 3.0}\n')      # one plot: a quick test
    assert _koda(capsys, run)[0] == 0
    index = run / "report" / "index.html"
    before = index.read_bytes()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(build, "render", killed)
    with pytest.raises(KeyboardInterrupt):
        cli.main(["report", str(run)])
    assert index.read_bytes() == before
    assert not list((run / "report").glob(".*.tmp"))
