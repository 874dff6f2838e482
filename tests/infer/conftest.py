import pytest
import torch

from koda.checkpoint import save_standalone
from tests.helpers.infer import tiny_model


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="session")
def standalone_dir(tmp_path_factory, tiny_data):
    """A standalone directory of the TINY model with the tiny tokenizer beside it."""
    directory = tmp_path_factory.mktemp("standalone") / "model"
    save_standalone(tiny_model(), directory, tokenizer=tiny_data.tokenizer)
    return directory


@pytest.fixture(autouse=True)
def _restore_process_settings():
    """``koda generate`` switches the process into deterministic mode; undo it after each test
    so other suites in the same pytest process run as they would alone."""
    saved = (torch.are_deterministic_algorithms_enabled(), torch.get_float32_matmul_precision(),
             torch.get_num_threads())
    yield
    torch.use_deterministic_algorithms(saved[0])
    torch.set_float32_matmul_precision(saved[1])
    torch.set_num_threads(saved[2])
