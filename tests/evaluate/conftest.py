import dataclasses

import pytest
import torch

from koda.checkpoint import save_standalone
from koda.model import KodaForCausalLM
from tests.helpers.tiny import TINY


@pytest.fixture(scope="session")
def long_standalone_dir(tmp_path_factory, tiny_data):
    """The TINY model with room for a task prompt (a few hundred tokens), tiny tokenizer beside it."""
    torch.manual_seed(0)
    model = KodaForCausalLM(dataclasses.replace(TINY, max_seq_len=1024)).eval()
    directory = tmp_path_factory.mktemp("standalone-long") / "model"
    save_standalone(model, directory, tokenizer=tiny_data.tokenizer)
    return directory
