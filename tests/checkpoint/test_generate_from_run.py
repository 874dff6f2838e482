"""``koda generate`` on a training run: the in-memory conversion gives the converted model's tokens.

Uses the shared 2-rank run of this directory's conftest (``trained_run``).
"""

import json

from koda import cli


def _tokens(capsys, model_dir, *extra) -> list[list[int]]:
    argv = ["generate", "--model", str(model_dir), "--prompt", "def f(x):\\n", "--max-new-tokens", "12",
            "--strategy", "contrastive", "--json", "--stop", *extra]
    assert cli.main(argv) == 0, capsys.readouterr().err
    return [s["token_ids"] for s in json.loads(capsys.readouterr().out)["samples"]]


def test_run_directory_and_its_conversion_give_the_same_tokens(trained_run, tmp_path, capsys):
    from koda.checkpoint import convert_checkpoint

    convert_checkpoint(trained_run.run_dir, tmp_path / "converted", tokenizer=trained_run.data.tokenizer)
    from_run = _tokens(capsys, trained_run.run_dir)
    assert from_run == _tokens(capsys, tmp_path / "converted")
    assert from_run[0], "nothing generated"
    tags = sorted(p.name for p in trained_run.checkpoints.iterdir() if p.name.startswith("step"))
    assert len(_tokens(capsys, trained_run.run_dir, "--tag", tags[0])) == 1
