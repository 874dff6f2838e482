"""The spawner: a clean process that forks solvers on the judge's request.

Solvers are forks, and a fork copies its parent's memory. If the judge forked them, every
solver would start with the tests (and their expected values) in its heap, a few ``gc`` calls
away. So the judge forks this spawner *before* it reads the job and asks it for each new
solver; the spawner never holds any part of the job (each solver reads its own solution from
its request pipe), so a solver's memory holds its own solution and nothing else. The spawner
is also the solvers' reaper (a child subreaper), which lets it report how a solver died and
kill everything a solver left behind.

A run that needs only one solver (a program, or a tests file with one test, as every HumanEval
problem) skips a process: the spawner, still clean, *becomes* that solver, and the judge, its
parent, reaps it; the end of the PID namespace takes whatever it left.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from typing import TYPE_CHECKING

from koda.sandbox import limits, namespaces, solver, syscalls

if TYPE_CHECKING:  # the sandbox side gets the policy as a plain namespace (runner.py)
    from koda.sandbox.policy import SandboxPolicy

def spawner_main(sock: socket.socket, policy: SandboxPolicy, layers: frozenset[str], workdir: str,
                 single: bool = False) -> None:
    """Serve ``spawn`` and ``end`` until the judge closes the socket; never returns."""
    try:
        syscalls.prctl(syscalls.PR_SET_CHILD_SUBREAPER, 1)
        syscalls.set_name('koda-spawner')
        limits.not_dumpable()
        current: int | None = None
        while True:
            msg, fds, _, _ = socket.recv_fds(sock, 64, 2)
            if not msg:
                break
            if msg == b"spawn" and single:
                sock.send(str(os.getpid()).encode())
                sock.close()
                solver.solver_main(policy, layers, workdir, fds[0], fds[1])
            if msg == b"spawn-fresh" and "ipc_namespace" in layers:
                # a new solution in a batch: SysV/POSIX IPC objects of the last one stay behind
                namespaces.unshare_layer("ipc_namespace", syscalls.CLONE_NEWIPC)
            if msg in (b"spawn", b"spawn-fresh"):
                current = _spawn(sock, policy, layers, workdir, fds)
            elif msg in (b"end", b"last"):
                last = msg == b"last" and "pid_namespace" in layers
                status = reap_solver(current) if last else _kill_all(current, layers)
                current = None
                sock.send(b"none" if status is None else str(status).encode())
    finally:
        if "pid_namespace" not in layers:
            _kill_all(None, layers)
        os._exit(0)


def reap_solver(pid: int | None) -> int | None:
    """End of the run: only the solver's status matters, its leftovers die with the namespace.

    The judge exits right after this, and when PID 1 of a namespace exits the kernel kills
    every process in it; so the uid-wide kill (a fork) is skipped for the last solver.
    """
    if pid is None:
        return None
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)  # the solver leads its own group (weaker mode needs this)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return os.waitpid(pid, 0)[1]


def _spawn(sock, policy, layers, workdir, fds) -> int:
    pid = os.fork()
    if pid == 0:
        sock.close()
        solver.solver_main(policy, layers, workdir, fds[0], fds[1])
    for fd in fds:
        os.close(fd)
    sock.send(str(pid).encode())
    return pid


def _kill_all(solver_pid: int | None, layers: frozenset[str]) -> int | None:
    """SIGKILL every process of the solver uid, reap them all, return the solver's status.

    ``kill(-1, SIGKILL)`` sent *as the solver uid* reaches exactly the processes that uid owns
    in this PID namespace, including ones that left the process group or double-forked; the
    kernel delivers it while holding the task list, so a fork bomb cannot outrun it. Without
    judge separation there is no such uid and only the solver's process group is killed.
    """
    if "judge_separation" in layers:
        killer = os.fork()
        if killer == 0:
            try:
                namespaces.become("solver", layers)
                os.kill(-1, signal.SIGKILL)
            finally:
                os._exit(0)
    else:
        return _kill_group(solver_pid)
    status = None
    while True:
        try:
            pid, st = os.waitpid(-1, 0)
        except ChildProcessError:
            return status
        if pid == solver_pid:
            status = st


def _kill_group(solver_pid: int | None) -> int | None:
    """Weaker mode: kill the solver's process group; whatever left the group may survive."""
    status = None
    if solver_pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(solver_pid, signal.SIGKILL)
        status = os.waitpid(solver_pid, 0)[1]
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass
    return status
