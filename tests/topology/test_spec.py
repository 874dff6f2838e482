"""Topology files: the examples load; every bad file gets one clear line and launches nothing."""

import pytest

from koda import cli
from koda.topology import launch as launch_mod
from koda.topology.spec import TopologyError, load_topology
from tests.topology._topology_files import EXAMPLE_4D, LOOPBACK, small_doc


def test_examples_load():
    t = load_topology(EXAMPLE_4D)
    assert t.torus.dims == (4, 4, 2, 2) and t.world_size == 64 and t.parallel.expert_parallel_size == 8
    assert t.hosts[5].coords == (0, 1, 0, 1)  # assigned in row-major order
    assert t.links.bandwidth == 2.5e10  # "2.5e10" is a string to YAML 1.1; accepted as a number
    assert load_topology(LOOPBACK).launch.launcher == "local"


def _hosts(n, **extra):
    return [{"name": f"h{i}", "coords": [i // 2, i % 2, 0, 0], **extra} for i in range(n)]


BAD = [
    ("not a mapping", "- 1\n- 2\n", "expected a mapping"),
    ("yaml syntax", "torus: [4, 4\n", "not valid YAML"),
    ("missing torus", {"hosts": ["a"]}, "torus: missing"),
    ("torus 3-D", small_doc(torus=[2, 2, 1]), "must be 4 integers"),
    ("torus zero", small_doc(torus=[2, 0, 1, 1]), "must be 4 integers >= 1"),
    ("torus type", small_doc(torus="2x2"), "torus: '2x2' is not a list"),
    ("unknown top key", small_doc(tours=[2, 2, 1, 1]), "tours: unknown key"),
    ("unknown host key", small_doc(hosts=[{"name": "a", "gpus": 4}]), "hosts[0].gpus: unknown key"),
    ("unknown link key", small_doc(links={"latency": 1}), "links.latency: unknown key"),
    ("no hosts", small_doc(hosts=[]), "hosts: expected a non-empty list"),
    ("host without name", small_doc(hosts=[{"slots": 1}]), "hosts[0].name: missing"),
    ("duplicate name", small_doc(hosts=[{"name": "a"}, {"name": "a"}]), "hosts[1].name: 'a' already used"),
    (
        "duplicate coords",
        small_doc(hosts=[{"name": "a", "coords": [0, 1, 0, 0]}, {"name": "b", "coords": [0, 1, 0, 0]}]),
        "hosts[1].coords: [0, 1, 0, 0] already used by hosts[0] (a)",
    ),
    ("coords out of range", small_doc(hosts=[{"name": "a", "coords": [0, 2, 0, 0]}]), "out of range"),
    ("coords negative", small_doc(hosts=[{"name": "a", "coords": [-1, 0, 0, 0]}]), "out of range"),
    ("coords wrong length", small_doc(hosts=[{"name": "a", "coords": [0, 0]}]), "needs 4 coordinates"),
    (
        "coords partial",
        small_doc(hosts=[{"name": "a", "coords": [0, 0, 0, 0]}, "b"]),
        "hosts[1].coords: missing",
    ),
    (
        "coords type",
        small_doc(hosts=[{"name": "a", "coords": [0, "x", 0, 0]}]),
        "hosts[0].coords[1]: 'x' is not",
    ),
    (
        "too many hosts",
        small_doc(hosts=[f"h{i}" for i in range(5)]),
        "5 hosts do not fit a 2x2x1x1 torus of 4",
    ),
    (
        "slots mismatch",
        small_doc(hosts=_hosts(3) + [{"name": "x", "slots": 2, "coords": [1, 1, 0, 0]}]),
        "hosts[3].slots: 2 does not match",
    ),
    ("slots type", small_doc(slots_per_host="two"), "slots_per_host: 'two' is not an integer"),
    ("slots zero", small_doc(slots_per_host=0), "slots_per_host: 0 must be >= 1"),
    ("ep not dividing", small_doc(parallel={"expert_parallel_size": 3}), "3 does not divide world size 4"),
    ("ep bool", small_doc(parallel={"expert_parallel_size": True}), "True is not an integer"),
    ("ep zero", small_doc(parallel={"expert_parallel_size": 0}), "expert_parallel_size: 0 must be >= 1"),
    ("negative alpha", small_doc(links={"alpha": -1}), "links.alpha: -1.0 must be >= 0"),
    ("zero bandwidth", small_doc(links={"bandwidth": 0}), "links.bandwidth: 0.0 must be > 0"),
    ("bandwidth text", small_doc(links={"bandwidth": "fast"}), "links.bandwidth: 'fast' is not a number"),
    ("queue scheme", small_doc(queue={"scheme": "milstein"}), "queue.scheme: 'milstein' is not one of"),
    ("queue theta", small_doc(queue={"theta": 0}), "queue.theta: 0.0 must be > 0"),
    ("launcher", small_doc(launch={"launcher": "ssh"}), "launch.launcher: 'ssh' is not one of"),
    ("accelerator", small_doc(launch={"accelerator": "gpu"}), "launch.accelerator: 'gpu' is not one of"),
    ("port", small_doc(launch={"master_port": 70000}), "launch.master_port: 70000 is not a TCP port"),
    ("section type", small_doc(parallel=[2]), "parallel: expected a mapping"),
    ("env value", small_doc(launch={"env": {"A": [1]}}), "launch.env.A: [1] is not a string or number"),
    ("workload negative", small_doc(workload={"hidden": -5}), "workload.hidden: -5 must be >= 0"),
]


@pytest.mark.parametrize("doc,message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_file_is_one_line_error_naming_the_field(write_topology, doc, message):
    path = write_topology(doc)
    with pytest.raises(TopologyError) as err:
        load_topology(path)
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"{path}: ")
    assert message in text


@pytest.mark.parametrize("doc,message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_file_launches_nothing(write_topology, tmp_path, monkeypatch, capsys, doc, message):
    started = []
    monkeypatch.setattr(launch_mod.subprocess, "Popen", lambda *a, **k: started.append(a))
    hostfile = tmp_path / "out" / "hostfile"
    path = write_topology(doc)
    rc = cli.main(["launch", "--topology", str(path), "--hostfile", str(hostfile), "--", "--steps", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and started == [] and not hostfile.exists() and not (tmp_path / "out").exists()
    assert err.count("\n") == 1 and message in err and err.startswith("koda launch: error: ")


def test_missing_file(tmp_path):
    with pytest.raises(TopologyError, match="cannot read"):
        load_topology(tmp_path / "nope.yaml")
