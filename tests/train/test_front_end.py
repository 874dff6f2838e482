"""`koda train` refuses broken inputs in the launching process, before any rank starts."""

import json
import shutil

import pytest

from koda.cli import main
from tests.helpers.tiny import write_run_config


@pytest.fixture
def data_copy(tiny_data, tmp_path):
    """A private copy of the tiny data that a test may damage."""
    tok = tmp_path / "tok.model"
    shutil.copy(tiny_data.tokenizer, tok)
    shards = tmp_path / "shards"
    shutil.copytree(tiny_data.shards_dir, shards)
    return tiny_data.__class__(**{**tiny_data.__dict__, "tokenizer": str(tok), "shards_dir": str(shards)})


def _train(config, capsys):
    code = main(["train", "--config", str(config)])
    return code, capsys.readouterr().err.strip()


def test_truncated_shard_is_named_and_nothing_starts(data_copy, tmp_path, capsys):
    shard = sorted((tmp_path / "shards").glob("train_*.bin"))[0]
    shard.write_bytes(shard.read_bytes()[:-10])
    config = write_run_config(tmp_path / "run.yaml", data_copy, tmp_path / "run", steps=10)
    code, err = _train(config, capsys)
    assert code == 2 and err.startswith("koda train: error: shard ") and "truncated or corrupt" in err
    assert "\n" not in err
    assert not (tmp_path / "run").exists()


def test_missing_shard_is_named(data_copy, tmp_path, capsys):
    for path in (tmp_path / "shards").glob("val_*"):
        path.unlink()
    config = write_run_config(tmp_path / "run.yaml", data_copy, tmp_path / "run", steps=10)
    code, err = _train(config, capsys)
    assert code == 2 and "val_00000 is missing" in err


def test_corrupt_tokenizer_is_named(data_copy, tmp_path, capsys):
    (tmp_path / "tok.model").write_bytes(b"\x00garbage")
    config = write_run_config(tmp_path / "run.yaml", data_copy, tmp_path / "run", steps=10)
    code, err = _train(config, capsys)
    assert code == 2 and "not a valid sentencepiece model" in err


def test_tokenizer_of_another_size_is_named(data_copy, tmp_path, capsys):
    config = write_run_config(tmp_path / "run.yaml", data_copy, tmp_path / "run", steps=10,
                              model={"vocab_size": 1024})
    code, err = _train(config, capsys)
    assert code == 2 and "vocabulary 512 != model.vocab_size 1024" in err


def test_fresh_start_does_not_overwrite_an_existing_run(data_copy, tmp_path, capsys):
    tag = tmp_path / "run" / "checkpoints" / "step00000005"
    tag.mkdir(parents=True)
    (tag / "COMPLETE").write_text('{"step": 5, "world_size": 2, "files": {}}')
    (tmp_path / "run" / "metrics.jsonl").write_text('{"step": 5}\n')
    config = write_run_config(tmp_path / "run.yaml", data_copy, tmp_path / "run", steps=10)
    code, err = _train(config, capsys)
    assert code == 2 and "run already holds checkpoints (latest step00000005): pass --resume" in err
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == '{"step": 5}\n'


def test_client_optimizer_conflict_is_refused_before_ranks_start(tiny_data, tmp_path, capsys):
    """A run config optimizer section next to a DeepSpeed config that forbids client optimizers."""
    config = write_run_config(tmp_path / "run.yaml", tiny_data, tmp_path / "run", steps=10,
                              optimizer={"name": "kfac", "lr": 0.05})
    ds_path = config.with_suffix(".ds.json")
    ds_path.write_text(json.dumps({**json.loads(ds_path.read_text()), "zero_allow_untested_optimizer": False}))
    code, err = _train(config, capsys)
    assert code == 2 and "ds_config.zero_allow_untested_optimizer is false" in err, err
    assert "\n" not in err
    assert not (tmp_path / "run").exists()
