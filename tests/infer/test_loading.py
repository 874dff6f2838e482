"""Loading a standalone model directory: same logits as the model that was saved."""

import pytest
import torch

from koda.errors import KodaError
from koda.infer.loading import load_model
from tests.helpers.infer import tiny_model


def test_standalone_round_trip_gives_the_same_logits(standalone_dir):
    loaded = load_model(standalone_dir)
    assert loaded.source == "standalone" and loaded.tokenizer.path == standalone_dir / "tokenizer.model"
    x = torch.randint(4, 512, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), tiny_model()(x), rtol=0, atol=0)
    assert not loaded.model.training


def test_bf16_cast(standalone_dir):
    assert load_model(standalone_dir, dtype="bf16").model.lm_head.weight.dtype == torch.bfloat16


def test_unusable_directories_are_one_line_errors(tmp_path, standalone_dir):
    with pytest.raises(KodaError, match="no such directory"):
        load_model(tmp_path / "missing")
    with pytest.raises(KodaError, match="neither a standalone model"):
        load_model(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((standalone_dir / "config.json").read_text())
    (broken / "model.safetensors").write_bytes((standalone_dir / "model.safetensors").read_bytes()[:200])
    with pytest.raises(KodaError, match="model.safetensors"):
        load_model(broken)


def test_a_run_directory_goes_through_the_checkpoint_reader(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(KodaError, match="no checkpoint to convert"):
        load_model(tmp_path)
