"""A real two-node launch on one machine: two DeepSpeed launchers (``--no_ssh --node_rank K``) on loopback.

``koda launch`` with the loopback topology starts one launcher per node; the ranks rendezvous over
TCP on 127.0.0.1 exactly as they would across machines. The probe checks rendezvous and that each
rank landed on its hostfile line; the training test runs the smoke model with ZeRO-3 and
expert parallelism 2 across the two nodes.
"""

import importlib.util
import json
import math
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.topology._topology_files import LOOPBACK, REPO

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _koda_launch(tmp_path, *extra, timeout):
    cmd = [
        sys.executable,
        "-m",
        "koda",
        "launch",
        "--topology",
        str(LOOPBACK),
        "--hostfile",
        str(tmp_path / "hostfile"),
        "--master-port",
        str(_free_port()),
        *extra,
    ]
    return subprocess.run(
        cmd,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**__import__("os").environ, "PYTHONPATH": str(REPO)},
    )


def test_two_node_probe_realises_the_placement(tmp_path):
    res = _koda_launch(tmp_path, "--probe", timeout=300)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    assert "probe: world size 2" in out and "probe: placement realised" in out
    assert "probe: rank 1 on node 1" in out
    assert (tmp_path / "hostfile").read_text().splitlines()[-2:] == ["node-a slots=1", "node-b slots=1"]


def _has_trainer() -> bool:
    # Only this checkout's trainer counts: an editable install of another checkout can make
    # find_spec("koda.train") succeed from the wrong tree.
    spec = importlib.util.find_spec("koda.train")
    return spec is not None and Path(spec.origin).resolve().is_relative_to(REPO / "koda")


@pytest.mark.skipif(not _has_trainer(), reason="koda.train (the trainer) is not on this branch yet")
def test_two_node_zero3_expert_parallel_training(tiny_data, tmp_path):
    from tests.helpers.tiny import write_run_config

    run_dir = tmp_path / "run"
    config = write_run_config(tmp_path / "run.yaml", tiny_data, run_dir, steps=4)
    res = _koda_launch(tmp_path, "--", "--config", str(config), timeout=600)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-5000:]
    # Two launchers, one per node, each with one local rank.
    for k in (0, 1):
        assert f"nnodes=2, num_local_procs=1, node_rank={k}" in out
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    ce = [r["train/ce"] for r in records if "train/ce" in r]
    assert len(ce) == 4 and all(math.isfinite(x) for x in ce)
    assert (run_dir / "checkpoints" / "step00000004" / "COMPLETE").is_file()
