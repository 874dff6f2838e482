"""The one builder of DeepSpeed launcher commands for ranks on this machine, and the front
process that runs them.

``koda train``, the test helpers and the tools all start local ranks the same way: DeepSpeed's
per-node launcher, ``python -u -m deepspeed.launcher.launch --world_info=<localhost: 0..N-1>
--master_addr=127.0.0.1 --master_port=P`` then ``--module M args`` or a script. On one machine
DeepSpeed's ``runner.py`` (the ``deepspeed`` command) does nothing more than encode that world
and start launch.py, at the price of a third process that imports DeepSpeed: ~1.5 s at start
and ~1 s of teardown at the end of every run on a small machine, so it is left out here; the
multi-node path (``koda launch``) goes through it. ``launch_ranks`` is that launch for a
caller that only wants the ranks' exit status and output (a benchmark, a test), ``run_ranks``
a function on every rank with its results collected. Process tree of a run::

    front (koda train) -> launch.py -> rank 0 .. rank N-1

Signals. DeepSpeed's ``launch.py`` answers SIGTERM by terminating the ranks at once (30 s,
then SIGKILL) and does not handle SIGUSR1, whose default action ends it. A scheduler's stop
notice must reach the ranks instead, which save at the next step boundary and exit 0
(``koda.distributed.preemption``); then launch.py exits 0 on its own. So the front process
starts the launcher in its own session and forwards SIGTERM/SIGUSR1/SIGINT to launch.py's
children, the ranks; a second signal stops the whole launcher group (for a run that does not
stop by itself). A terminal's Ctrl-C reaches only the front (the launcher is in another
session), so it is a stop request like SIGTERM. If the front dies without forwarding anything
(SIGKILL), ``koda.distributed.guardian`` stops the group.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

from koda.distributed.preemption import STOP_SIGNALS
from koda.errors import KodaError

_LAUNCH_MODULE = "deepspeed.launcher.launch"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def world_info(world: int) -> str:
    """This machine's `world` devices (0 .. world-1) as launch.py's ``--world_info`` reads them
    (URL-safe base64 of the JSON ``{"localhost": [0, ..]}``, what ``runner.py`` passes it)."""
    return base64.urlsafe_b64encode(json.dumps({"localhost": list(range(world))}).encode()).decode()


def command(world: int, port: int, target: str, args: list[str] = (), module: bool = True) -> list[str]:
    """`world` local ranks running module (or script) `target` with `args`, under DeepSpeed's launch.py."""
    return [sys.executable, "-u", "-m", _LAUNCH_MODULE, f"--world_info={world_info(world)}",
            "--master_addr=127.0.0.1", f"--master_port={port}", *(["--module"] if module else []), target, *args]


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



class RanksFailed(KodaError):
    """Local ranks exited non-zero; ``proc`` holds their captured output for the caller to show."""

    def __init__(self, what: str, proc: subprocess.CompletedProcess):
        super().__init__(f"{what} failed (exit {proc.returncode})")
        self.proc = proc

    def tail(self, stdout: int = 4000, stderr: int = 6000) -> str:
        """The ends of the captured output, where a rank's traceback is."""
        return f"{(self.proc.stdout or '')[-stdout:]}\n{(self.proc.stderr or '')[-stderr:]}"


def spawn_ranks(world: int, port: int, target: str, args: list[str] = (), module: bool = True,
                env: dict | None = None, timeout: float | None = None, capture: bool = True,
                cwd: str | os.PathLike | None = None) -> subprocess.CompletedProcess:
    """`world` ranks on this machine started directly, with the environment DeepSpeed's
    launcher would give them (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT, ...), but
    without launch.py in front (it imports DeepSpeed: a second or more per start on a small
    machine). Like launch.py, a rank that fails takes the others down (they would wait in a
    collective for ever). Returns one CompletedProcess: rank 0's output first, the first
    non-zero exit code."""
    import tempfile

    base = {**os.environ, **(env or {}), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
            "WORLD_SIZE": str(world), "LOCAL_WORLD_SIZE": str(world), "LOCAL_SIZE": str(world),
            "CROSS_RANK": "0", "CROSS_SIZE": "1"}
    cmd = [sys.executable, "-u", *(["-m"] if module else []), target, *args]
    with tempfile.TemporaryDirectory() as logs, contextlib.ExitStack() as files:
        def log(name: str):
            return files.enter_context(open(os.path.join(logs, name), "w+")) if capture else None

        outs = [log(f"rank{r}.out") for r in range(world)]
        errs = [log(f"rank{r}.err") for r in range(world)]
        procs = [subprocess.Popen(cmd, env={**base, "RANK": str(r), "LOCAL_RANK": str(r)}, cwd=cwd,
                                  stdout=outs[r], stderr=errs[r]) for r in range(world)]
        deadline = None if timeout is None else time.monotonic() + timeout
        codes: list = []
        try:
            while None in (codes := [p.poll() for p in procs]):     # poll every rank, every time
                if any(c not in (None, 0) for c in codes):
                    break
                if deadline is not None and time.monotonic() > deadline:
                    raise subprocess.TimeoutExpired(cmd, timeout)
                time.sleep(0.05)
        finally:
            _stop(procs)
        # the rank that failed first is the cause; the others' codes are then our SIGTERM
        code = next((c for c in codes if c not in (None, 0)), None)
        code = code if code is not None else next((p.returncode for p in procs if p.returncode != 0), 0)

        def text(streams) -> str | None:
            if not capture:
                return None
            for f in streams:
                f.seek(0)
            return "".join(f.read() for f in streams)

        stdout, stderr = text(outs), text(errs)
    return subprocess.CompletedProcess(cmd, code, stdout, stderr)


def _stop(procs: list[subprocess.Popen], grace_s: float = 5.0) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + grace_s
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        if p.poll() is None:
            p.kill()
            p.wait()


def launch_ranks(target: str, args: list[str] = (), world: int = 2, module: bool = True, env: dict | None = None,
                 timeout: float | None = None, capture: bool = True, cwd: str | os.PathLike | None = None,
                 direct: bool = False) -> subprocess.CompletedProcess:
    """Run `world` local ranks of module (or script) `target` with `args` to their end, on a
    port of their own; `env` adds to this process's environment. Output is captured as text
    unless `capture` is False. DeepSpeed's CPU backend leaves a shared-memory buffer per rank
    in /dev/shm that nobody else removes, so they go here whether the ranks succeed, fail or
    time out (``comm.remove_shm_buffers``). Returns the launcher's CompletedProcess; the
    caller judges its returncode. `direct`: start the ranks without DeepSpeed's launcher
    (``spawn_ranks``; tests and tools whose subject is not the launcher)."""
    from koda.distributed.comm import remove_shm_buffers

    port = free_port()
    try:
        if direct:
            return spawn_ranks(world, port, target, list(args), module, env, timeout, capture, cwd)
        return subprocess.run(command(world, port, target, list(args), module), capture_output=capture,
                              text=True, timeout=timeout, env={**os.environ, **(env or {})}, cwd=cwd)
    finally:
        remove_shm_buffers("127.0.0.1", port)


def run_ranks(job: str, kwargs: dict, out_dir: str | os.PathLike, world: int = 2, env: dict | None = None,
              timeout: float | None = None, cwd: str | os.PathLike | None = None, direct: bool = False) -> list:
    """Call ``job`` ("package.module:function") with `kwargs` on `world` local ranks; returns
    each rank's JSON-able return value, rank 0 first (``koda.distributed.rank_entry`` writes
    them to ``out_dir/rank<R>.json``). Raises RanksFailed when a rank fails."""
    from pathlib import Path

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    proc = launch_ranks("koda.distributed.rank_entry", [job, json.dumps(kwargs), str(out_dir)], world, env=env,
                        timeout=timeout, cwd=cwd, direct=direct)
    if proc.returncode != 0:
        raise RanksFailed(f"ranks of {job}", proc)
    return [json.loads((out_dir / f"rank{r}.json").read_text()) for r in range(world)]
