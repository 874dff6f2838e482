"""koda launch refuses a topology whose world or expert-parallel size is not the run's DeepSpeed plan's."""

import pytest
import yaml

from koda import cli
from koda.topology import launch as launch_mod
from tests.topology._topology_files import LOOPBACK, REPO, small_doc

SMOKE_DS = "ds_configs/zero3_ep_smoke.json"     # autoep_size auto: gcd(2 ranks, 4 experts) = 2


def _launch(topology, tmp_path, capsys, *train_args):
    hostfile = tmp_path / "out" / "hostfile"
    rc = cli.main(["launch", "--topology", str(topology), "--dry-run", "--hostfile", str(hostfile),
                   "--", *train_args])
    out, err = capsys.readouterr()
    assert not hostfile.exists()
    return rc, out, err


@pytest.fixture(autouse=True)
def _no_start(monkeypatch):
    monkeypatch.setattr(launch_mod.subprocess, "Popen", lambda *a, **k: pytest.fail("launch started a process"))


def test_loopback_with_the_plans_ep_size_is_accepted(tmp_path, capsys):
    rc, out, _ = _launch(LOOPBACK, tmp_path, capsys, "--config", "smoke")
    assert rc == 0 and "--module koda.train --config smoke" in out


def test_expert_parallel_size_other_than_the_plans_is_refused(write_topology, tmp_path, capsys):
    doc = yaml.safe_load(LOOPBACK.read_text())
    doc["parallel"]["expert_parallel_size"] = 1
    path = write_topology(doc)
    rc, out, err = _launch(path, tmp_path, capsys, "--config", "smoke")
    assert rc == 2 and out == "" and err.count("\n") == 1
    assert f"parallel.expert_parallel_size 1 in {path} != expert-parallel size 2" in err
    assert str(REPO / SMOKE_DS) in err or SMOKE_DS in err


def test_world_size_other_than_the_run_configs_is_refused(write_topology, tmp_path, capsys):
    # 4 ranks, EP 2; the smoke config declares world_size 2 (and resolves EP 2 there).
    path = write_topology(small_doc(launch={"launcher": "local", "accelerator": "cpu"}))
    rc, out, err = _launch(path, tmp_path, capsys, "--config", "smoke")
    assert rc == 2 and out == "" and err.count("\n") == 1
    assert f"world size 4 of {path} (4 hosts x 1 slots) != world_size 2 of " in err
    assert "koda/configs/smoke.yaml" in err and "zero3_ep_smoke.json" in err


def test_declaring_the_world_moves_the_plan_with_it(write_topology, tmp_path, capsys):
    """--world-size 4 makes the smoke plan EP 4 (gcd(4, 4)): the EP-2 file is now the wrong one."""
    doc = small_doc(launch={"launcher": "local", "accelerator": "cpu"})
    rc, _, err = _launch(write_topology(doc), tmp_path, capsys, "--config", "smoke", "--world-size", "4")
    assert rc == 2 and "parallel.expert_parallel_size 2 in " in err and "expert-parallel size 4" in err
    doc["parallel"]["expert_parallel_size"] = 4
    rc, _, _ = _launch(write_topology(doc, "ep4.yaml"), tmp_path, capsys, "--config", "smoke", "--world-size", "4")
    assert rc == 0


def test_probe_needs_no_run_config(write_topology, tmp_path, capsys):
    doc = yaml.safe_load(LOOPBACK.read_text())
    doc["parallel"]["expert_parallel_size"] = 1
    rc, out, _ = _launch(write_topology(doc), tmp_path, capsys)
    assert rc == 2                       # the trainer's default config (smoke) disagrees
    rc = cli.main(["launch", "--topology", str(write_topology(doc)), "--dry-run", "--probe",
                   "--hostfile", str(tmp_path / "hf")])
    assert rc == 0 and "--module koda.topology.probe" in capsys.readouterr().out
