"""The one builder of DeepSpeed launcher commands for ranks on this machine, and the front
process that runs them.

``koda train``, the test helpers and ``tools/bench_train.py`` all start local ranks the
same way: ``python -u -m deepspeed.launcher.runner --num_gpus N --master_port P`` then
``--module M args`` or a script. Process tree of a run::

    front (koda train) -> runner.py -> launch.py -> rank 0 .. rank N-1

Signals. DeepSpeed's ``launch.py`` answers SIGTERM by terminating the ranks at once (30 s,
then SIGKILL), and neither it nor ``runner.py`` handles SIGUSR1, whose default action ends
them. A scheduler's stop notice must reach the ranks instead, which save at the next step
boundary and exit 0 (``koda.distributed.preemption``); then launch.py and runner.py exit 0 on
their own. So the front process starts the launcher in its own session and forwards
SIGTERM/SIGUSR1/SIGINT to launch.py's children, the ranks; a second signal stops the whole
launcher group (for a run that does not stop by itself). A terminal's Ctrl-C reaches only the
front (the launcher is in another session), so it is a stop request like SIGTERM. If the front
dies without forwarding anything (SIGKILL), ``koda.distributed.guardian`` stops the group.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys

from koda.distributed.preemption import STOP_SIGNALS

_LAUNCH_MODULE = "deepspeed.launcher.launch"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def runner_argv() -> list[str]:
    """DeepSpeed's launcher under this interpreter (its ``deepspeed`` script is the same module)."""
    return [sys.executable, "-u", "-m", "deepspeed.launcher.runner"]


def command(world: int, port: int, target: str, args: list[str] = (), module: bool = True) -> list[str]:
    """`world` local ranks running module (or script) `target` with `args`."""
    return [*runner_argv(), "--num_gpus", str(world), "--master_port", str(port),
            *(["--module"] if module else []), target, *args]


def rank_processes(launcher_pid: int) -> list:
    """The rank processes under a launcher: the children of DeepSpeed's launch.py."""
    import psutil

    try:
        tree = psutil.Process(launcher_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    ranks = []
    for proc in tree:
        with contextlib.suppress(psutil.Error):
            if _LAUNCH_MODULE in proc.parent().cmdline():
                ranks.append(proc)
    return ranks


class StopForwarder:
    """A launching process's SIGTERM/SIGUSR1 handler for launchers it started in their own
    sessions: the first signal goes to the ranks under them on this machine (as soon as they
    exist: call ``forward`` while waiting), a second one stops the launchers' process groups."""

    def __init__(self, procs: list[subprocess.Popen]):
        self.procs = procs
        self.pending: int | None = None
        self.forwarded: set[int] = set()
        self.hard = False

    def __call__(self, signum, frame) -> None:
        if self.pending is not None:
            self.hard = True
            for proc in self.procs:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
            return
        self.pending = signum
        self.forward()

    def forward(self) -> None:
        """Send the pending signal to every rank not yet sent it (ranks start one by one)."""
        if self.pending is None or self.hard:
            return
        import psutil

        for proc in self.procs:
            for rank in rank_processes(proc.pid):
                if rank.pid not in self.forwarded:
                    with contextlib.suppress(psutil.Error):
                        rank.send_signal(self.pending)
                        self.forwarded.add(rank.pid)

    @contextlib.contextmanager
    def installed(self):
        previous = {sig: signal.signal(sig, self) for sig in STOP_SIGNALS}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def start_guardian(pgid: int) -> subprocess.Popen:
    """The sidecar that stops process group `pgid` when this process ends by any means."""
    return subprocess.Popen([sys.executable, "-m", "koda.distributed.guardian", str(pgid)], stdin=subprocess.PIPE,
                            start_new_session=True)


def run(cmd: list[str], env: dict | None = None) -> int:
    """Run a launcher command to its end, forwarding stop signals; returns its exit code
    (0 when the ranks stopped cleanly on a forwarded signal)."""
    from koda.distributed.accelerator import announce_op_build

    announce_op_build()             # sets the ranks' accelerator and build folder; says if it builds
    forwarder = StopForwarder([])
    with forwarder.installed():           # before the launcher exists: no signal may be missed
        proc = subprocess.Popen(cmd, env=env, start_new_session=True)
        forwarder.procs.append(proc)
        guardian = start_guardian(proc.pid)
        try:
            while proc.poll() is None:
                forwarder.forward()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=0.5)
        except BaseException:           # an error here: leave no orphans behind
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
            raise
        finally:
            guardian.stdin.close()          # the launcher is gone: the guardian finds an empty group
            with contextlib.suppress(subprocess.TimeoutExpired):
                guardian.wait(timeout=15)
    if forwarder.hard:
        print(f"stopped at once on a second {signal.Signals(forwarder.pending).name}: no checkpoint written "
              "after the last complete one", file=sys.stderr, flush=True)
    return proc.returncode

