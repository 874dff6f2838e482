"""Turning a validated topology and its placement into ``deepspeed`` launcher commands, and running them.

The plan is built first and holds everything that will be written or run, so ``--dry-run``
prints exactly what a real launch does. Per launcher (``launch.launcher`` in the file):

* ``pdsh`` / ``mvapich``: one ``deepspeed --hostfile H --num_nodes N --launcher L`` from the
  login node; DeepSpeed ssh-es into the hosts in hostfile order.
* ``openmpi``: the same without ``--num_nodes``, which DeepSpeed's OpenMPI runner refuses;
  mpirun maps ranks by slot in hostfile order.
* ``no_ssh``: ``deepspeed --no_ssh --node_rank K`` on the node that runs ``koda launch`` (SLURM:
  one ``koda launch`` per node from srun). K is the host's line in the hostfile, found from
  ``--node-rank`` or, with ``auto``, from this machine's hostname, so ranks follow the placement
  whatever order the scheduler lists the nodes in.
* ``local``: every host of the file as its own ``deepspeed --no_ssh --node_rank K`` process on
  this machine, rendezvousing on 127.0.0.1: a real multi-node launch (one launcher and process
  set per node) on one box, for tests and for trying a topology file out.

Accelerator. ``launch.accelerator: cpu`` or ``cuda`` sets ``DS_ACCELERATOR`` on every node. With
``auto`` (the default), the local and no_ssh launchers, which start ranks on this machine, set
``DS_ACCELERATOR=cpu`` when this machine has no GPU; the ssh/MPI launchers set nothing, because a
login node without a GPU says nothing about the compute nodes, and each node's DeepSpeed detects
its own accelerator.

Environment. DeepSpeed forwards to remote nodes only
variables with a few prefixes (NCCL, PYTHON, UCX, ...), so for the ssh/MPI launchers the
variables go into an env file next to the hostfile, and ``DS_ENV_FILE`` names it: DeepSpeed's
runner reads that file (its ``.deepspeed_env`` mechanism) and exports each line on every node.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import koda
from koda.distributed.local_launch import StopForwarder
from koda.errors import KodaError
from koda.topology.hostfile import hostfile_text
from koda.topology.placement import Placement
from koda.topology.spec import Topology

TRAIN_MODULE = "koda.train"
REMOTE_LAUNCHERS = ("pdsh", "openmpi", "mvapich")


@dataclass(frozen=True)
class LaunchPlan:
    """What a launch writes (hostfile, env file) and runs (one command per launcher process)."""

    hostfile: Path
    hostfile_text: str
    env_file: Path | None
    env_file_text: str
    env: dict[str, str]
    commands: list[list[str]] = field(default_factory=list)
    master: tuple[str, int] | None = None  # ranks run on this machine: clean up after them here


def _deepspeed_argv() -> list[str]:
    """The ``deepspeed`` script of this interpreter's environment, else its runner module."""
    beside = Path(sys.executable).parent / "deepspeed"
    if beside.exists():
        return [str(beside)]
    return [sys.executable, "-m", "deepspeed.launcher.runner"]


def _has_gpu() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


def _accelerator_env(launcher: str, accelerator: str) -> dict[str, str]:
    if accelerator != "auto":
        return {"DS_ACCELERATOR": accelerator}
    if launcher in REMOTE_LAUNCHERS or os.environ.get("DS_ACCELERATOR") or _has_gpu():
        return {}
    return {"DS_ACCELERATOR": "cpu"}


def _auto_node_rank(topology: Topology, placement: Placement) -> int:
    names = {socket.gethostname(), socket.getfqdn(), socket.gethostname().split(".")[0]}
    for k, h in enumerate(placement.order):
        host = topology.hosts[h]
        if host.name in names or host.addr in names:
            return k
    raise KodaError(f"this machine ({socket.gethostname()}) is not a host of {topology.path}; pass --node-rank K")


def plan_launch(
    topology: Topology,
    placement: Placement,
    train_args: list[str],
    *,
    hostfile: str | Path,
    launcher: str | None = None,
    node_rank: str | int | None = None,
    master_port: int | None = None,
    module: str = TRAIN_MODULE,
) -> LaunchPlan:
    """Build the launch of ``python -m <module> <train_args>`` (the trainer) on every rank."""
    launcher = launcher or topology.launch.launcher
    hostfile = Path(hostfile).absolute()
    n = len(topology.hosts)
    port = master_port or topology.launch.master_port
    first = topology.hosts[placement.order[0]]
    addr = "127.0.0.1" if launcher == "local" else (topology.launch.master_addr or first.addr)

    env = {**_accelerator_env(launcher, topology.launch.accelerator), **topology.launch.env}
    env_file, env_text = None, ""
    if launcher in REMOTE_LAUNCHERS and env:
        env_file = hostfile.with_suffix(".env")
        env_text = "".join(f"{k}={v}\n" for k, v in env.items())
        env = {**env, "DS_ENV_FILE": str(env_file)}
    if launcher == "local":
        # Every rank must import this same koda, not another checkout installed in the venv.
        root = str(Path(koda.__file__).resolve().parent.parent)
        rest = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != root]
        env["PYTHONPATH"] = os.pathsep.join([root, *rest])
        # All "nodes" share this machine's cores: DeepSpeed sets LOCAL_SIZE to one node's ranks,
        # and KODA sizes its CPU thread pools by LOCAL_WORLD_SIZE when set (koda.distributed).
        env["LOCAL_WORLD_SIZE"] = str(topology.world_size)

    base = [
        *_deepspeed_argv(),
        "--hostfile",
        str(hostfile),
        "--master_addr",
        addr,
        "--master_port",
        str(port),
    ]
    tail = ["--module", module, *train_args]
    if launcher in ("pdsh", "mvapich"):
        commands = [[*base, "--num_nodes", str(n), "--launcher", launcher, *tail]]
    elif launcher == "openmpi":
        commands = [[*base, "--launcher", "openmpi", *tail]]
    elif launcher == "no_ssh":
        if node_rank is None:
            raise KodaError("launcher no_ssh runs one node per call: pass --node-rank K (or auto)")
        k = _auto_node_rank(topology, placement) if node_rank == "auto" else int(node_rank)
        if not 0 <= k < n:
            raise KodaError(f"--node-rank {k} outside 0..{n - 1} ({n} hosts in {topology.path})")
        commands = [[*base, "--no_ssh", "--node_rank", str(k), *tail]]
    elif launcher == "local":
        commands = [[*base, "--no_ssh", "--node_rank", str(k), *tail] for k in range(n)]
    else:
        raise KodaError(f"unknown launcher {launcher!r}")
    return LaunchPlan(
        hostfile,
        hostfile_text(topology, placement),
        env_file,
        env_text,
        env,
        commands,
        master=(addr, port) if launcher in ("local", "no_ssh") else None,
    )


def format_plan(plan: LaunchPlan) -> str:
    """The plan as shell text: files to write, then the exact commands with their environment."""
    out = [f"# hostfile {plan.hostfile}", *plan.hostfile_text.rstrip("\n").splitlines()]
    if plan.env_file:
        out += [
            f"# env file {plan.env_file} (DeepSpeed exports each line on every node)",
            *plan.env_file_text.rstrip("\n").splitlines(),
        ]
    prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in plan.env.items())
    out.append(f"# {len(plan.commands)} launcher process(es)" + (", run together" if len(plan.commands) > 1 else ""))
    out += [" ".join(filter(None, [prefix, shlex.join(c)])) for c in plan.commands]
    return "\n".join(out)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


# The programs DeepSpeed's runners look for before launching (backend_exists in multinode_runner.py).
_BACKEND_PROGRAMS = {"pdsh": "pdsh", "openmpi": "ompi_info", "mvapich": "mpiname"}


def check_backend(launcher: str) -> None:
    """Refuse, in one line and before anything is written, a launcher whose program is missing here."""
    program = _BACKEND_PROGRAMS.get(launcher)
    if program and shutil.which(program) is None:
        raise KodaError(
            f"launcher {launcher} needs {program!r} on this machine, and it is not on PATH "
            "(install it, or use launcher no_ssh on each node, e.g. launchers/slurm/koda-torus.sbatch)"
        )


def run_launch(plan: LaunchPlan, *, timeout: float | None = None) -> int:
    """Write the hostfile (and env file), run the commands, return the first non-zero exit code."""
    plan.hostfile.parent.mkdir(parents=True, exist_ok=True)
    plan.hostfile.write_text(plan.hostfile_text)
    if plan.env_file:
        plan.env_file.write_text(plan.env_file_text)
    env = {**os.environ, **plan.env}
    # Each launcher gets its own process group, so stopping it reaches the launch.py and rank
    # processes under it (DeepSpeed's local runner does not forward SIGTERM itself).
    procs = [subprocess.Popen(cmd, env=env, start_new_session=True) for cmd in plan.commands]
    # SIGTERM/SIGUSR1 (a scheduler's stop notice) go to the ranks on this machine, which save
    # and exit 0 (koda.distributed.local_launch); the launchers then end by themselves.
    forwarder = StopForwarder(procs)
    deadline = None if timeout is None else time.monotonic() + timeout
    rc = 0
    try:
        with forwarder.installed():
            while any(p.poll() is None for p in procs):
                forwarder.forward()
                failed = [p.returncode for p in procs if p.returncode not in (None, 0)]
                if failed or (deadline and time.monotonic() > deadline):
                    rc = failed[0] if failed else 124
                    break
                time.sleep(0.2)
    finally:
        for p in procs:  # a failed node leaves its peers waiting at the rendezvous: stop them
            if p.poll() is None:
                _signal_group(p, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                _signal_group(p, signal.SIGKILL)
                p.wait()
        if plan.master:
            # DeepSpeed's CPU backend leaves shared-memory buffers named after the rendezvous.
            from koda.distributed.comm import remove_shm_buffers

            remove_shm_buffers(*plan.master)
    return rc or next((p.returncode for p in procs if p.returncode), 0)
