"""Fixtures for the topology tests."""

import pytest
import yaml


@pytest.fixture
def write_topology(tmp_path):
    """Write a dict (or raw text) as a topology file and return its path."""

    def write(doc, name="topo.yaml"):
        path = tmp_path / name
        path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
        return path

    return write
