"""Paths of the example topology files and a small valid topology document for the tests."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_4D = REPO / "launchers/topologies/torus-4x4x2x2.yaml"
LOOPBACK = REPO / "launchers/topologies/loopback-2node.yaml"


def small_doc(**over):
    """A valid 2x2x1x1 torus file, four hosts with one slot, expert-parallel size 2."""
    doc = {
        "torus": [2, 2, 1, 1],
        "hosts": [{"name": f"h{i}", "coords": [i // 2, i % 2, 0, 0]} for i in range(4)],
        "parallel": {"expert_parallel_size": 2},
    }
    doc.update(over)
    return doc
