"""Hostfiles and launcher commands: DeepSpeed's own runner reads them back in placement order."""

import dataclasses
import socket

import pytest
from deepspeed.launcher import runner as ds_runner

from koda import cli
from koda.errors import KodaError
from koda.topology import launch as launch_mod
from koda.topology import load_topology, place
from koda.topology.hostfile import hostfile_text, read_hostfile, write_hostfile
from koda.topology.launch import format_plan, plan_launch
from tests.topology._topology_files import EXAMPLE_4D, LOOPBACK, REPO, small_doc


@pytest.fixture(scope="module")
def example():
    t = load_topology(EXAMPLE_4D)
    return t, place(t, swap_budget=0)


def _ds_rank_hosts(argv):
    """Global rank -> host as DeepSpeed's runner and launch.py would assign them for this command."""
    args = ds_runner.parse_args(argv[1:])
    pool = ds_runner.fetch_hostfile(args.hostfile)
    active = ds_runner.parse_inclusion_exclusion(pool, args.include, args.exclude)
    active = ds_runner.apply_num_nodes_and_gpus(active, args.num_nodes, args.num_gpus)
    return [host for host, slots in active.items() for _ in slots], args


def test_hostfile_order_is_the_placement_and_deepspeed_parses_it(example, tmp_path):
    t, p = example
    path = write_hostfile(t, p, tmp_path / "hf")
    assert [h for h, _ in read_hostfile(path)] == [t.hosts[i].name for i in p.order]
    parsed = ds_runner._parse_hostfile(path.read_text().splitlines())
    assert list(parsed) == [t.hosts[i].name for i in p.order] and set(parsed.values()) == {1}


@pytest.mark.parametrize("launcher", ["pdsh", "mvapich", "openmpi"])
def test_ssh_launchers_give_ranks_in_placement_order(example, tmp_path, monkeypatch, launcher):
    monkeypatch.delenv("DS_ACCELERATOR", raising=False)
    t, p = example
    plan = plan_launch(t, p, ["--config", "small"], hostfile=tmp_path / "hf", launcher=launcher)
    assert len(plan.commands) == 1
    (tmp_path / "hf").write_text(plan.hostfile_text)
    hosts, args = _ds_rank_hosts(plan.commands[0])
    assert hosts == [t.hosts[i].name for i in p.order]
    assert args.module and args.user_script == "koda.train" and args.user_args == ["--config", "small"]
    assert args.master_addr == t.hosts[p.order[0]].addr and args.master_port == 29500
    assert args.launcher == launcher and (args.num_nodes == 64) == (launcher != "openmpi")
    # accelerator auto: a login node's lack of GPU says nothing about the compute nodes.
    assert plan.env == {} and plan.env_file is None
    # An explicit one reaches remote nodes through the env file DeepSpeed's runner exports.
    t_cpu = dataclasses.replace(t, launch=dataclasses.replace(t.launch, accelerator="cpu"))
    plan = plan_launch(t_cpu, p, [], hostfile=tmp_path / "hf", launcher=launcher)
    assert plan.env["DS_ENV_FILE"] == str(plan.env_file) and plan.env_file_text == "DS_ACCELERATOR=cpu\n"


def test_local_mode_is_one_no_ssh_launcher_per_node_on_loopback(tmp_path, monkeypatch):
    monkeypatch.delenv("DS_ACCELERATOR", raising=False)
    monkeypatch.setattr(launch_mod, "_has_gpu", lambda: False)
    t = load_topology(LOOPBACK)
    plan = plan_launch(t, place(t), ["--steps", "2"], hostfile=tmp_path / "hf")
    assert len(plan.commands) == 2 and plan.env_file is None
    assert plan.env["DS_ACCELERATOR"] == "cpu"  # this CPU machine runs the ranks
    (tmp_path / "hf").write_text(plan.hostfile_text)
    for k, cmd in enumerate(plan.commands):
        hosts, args = _ds_rank_hosts(cmd)
        assert args.no_ssh and args.node_rank == k
        assert args.master_addr == "127.0.0.1" and args.master_port == 29611
        assert hosts == ["node-a", "node-b"]


def test_no_ssh_node_rank_explicit_auto_and_missing(example, tmp_path, monkeypatch):
    t, p = example
    kw = dict(hostfile=tmp_path / "hf", launcher="no_ssh")
    cmd = plan_launch(t, p, [], node_rank="3", **kw).commands[0]
    assert cmd[cmd.index("--node_rank") + 1] == "3" and "--no_ssh" in cmd
    monkeypatch.setattr(socket, "gethostname", lambda: t.hosts[p.order[7]].name)
    cmd = plan_launch(t, p, [], node_rank="auto", **kw).commands[0]
    assert cmd[cmd.index("--node_rank") + 1] == "7"
    with pytest.raises(KodaError, match="pass --node-rank"):
        plan_launch(t, p, [], **kw)
    with pytest.raises(KodaError, match="outside 0..63"):
        plan_launch(t, p, [], node_rank="64", **kw)
    monkeypatch.setattr(socket, "gethostname", lambda: "elsewhere")
    monkeypatch.setattr(socket, "getfqdn", lambda: "elsewhere")
    with pytest.raises(KodaError, match="not a host of"):
        plan_launch(t, p, [], node_rank="auto", **kw)


def test_dry_run_prints_exact_commands_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DS_ACCELERATOR", raising=False)
    hf = tmp_path / "sub" / "hf"
    argv = [
        "launch",
        "--topology",
        str(EXAMPLE_4D),
        "--dry-run",
        "--hostfile",
        str(hf),
        "--",
        "--config",
        "large",
    ]
    rc = cli.main(argv)
    out = capsys.readouterr().out
    assert rc == 0 and not hf.parent.exists()
    assert "--num_nodes 64 --launcher pdsh --module koda.train --config large" in out
    lines = [ln for ln in out.splitlines() if ln.endswith(" slots=1")]
    assert len(lines) == 64 and lines[0].startswith("node-000 ")


def test_format_plan_and_hostfile_header(example, tmp_path):
    t, p = example
    text = hostfile_text(t, p)
    assert text.startswith("# DeepSpeed hostfile written by koda launch") and "global rank k" in text
    plan = plan_launch(t, p, ["--a b"], hostfile=tmp_path / "hf", launcher="openmpi")
    assert "'--a b'" in format_plan(plan)  # shell-quoted, so it can be pasted


def test_example_hostfile_is_what_koda_launch_writes():
    t = load_topology(EXAMPLE_4D)
    shipped = REPO / "launchers/hostfiles/torus-4x4x2x2.hostfile"
    # Same lines after the header line that names the topology path.
    assert shipped.read_text().splitlines()[1:] == hostfile_text(t, place(t)).splitlines()[1:]


def test_read_hostfile_rejects_bad_lines(tmp_path):
    (tmp_path / "hf").write_text("a slots=2\nb slots=x\n")
    with pytest.raises(KodaError, match="hf:2: expected 'host slots=N'"):
        read_hostfile(tmp_path / "hf")


def test_slots_per_host_give_consecutive_ranks(write_topology, tmp_path):
    t = load_topology(write_topology(small_doc(slots_per_host=2, parallel={"expert_parallel_size": 4})))
    p = place(t)
    plan = plan_launch(t, p, [], hostfile=tmp_path / "hf", launcher="pdsh")
    (tmp_path / "hf").write_text(plan.hostfile_text)
    hosts, _ = _ds_rank_hosts(plan.commands[0])
    assert hosts == [t.hosts[i].name for i in p.order for _ in range(2)]
    assert list(p.rank_nodes(t)) == [t.torus.index(t.hosts[i].coords) for i in p.order for _ in range(2)]


def test_missing_backend_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(launch_mod.shutil, "which", lambda name: None)
    started = []
    monkeypatch.setattr(launch_mod.subprocess, "Popen", lambda *a, **k: started.append(a))
    hf = tmp_path / "hf"
    rc = cli.main(["launch", "--topology", str(EXAMPLE_4D), "--hostfile", str(hf), "--", "--config", "large"])
    err = capsys.readouterr().err
    assert rc == 2 and not hf.exists() and started == []
    assert "launcher pdsh needs 'pdsh' on this machine" in err and err.count("\n") == 1
