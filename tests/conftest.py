"""Suite-wide settings: every test runs on the CPU accelerator with debug-size models."""

import os

import pytest

# DeepSpeed picks its accelerator at import time; tests never touch a GPU, so CI and GPU
# machines behave the same.
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("WANDB_MODE", "disabled")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """Tokenizer (vocab 512) and shards from ~1 MB of the standard library, built once."""
    from tests.helpers.tiny import build_tiny_data

    return build_tiny_data(tmp_path_factory.mktemp("tiny-data"))
