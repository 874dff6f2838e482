"""The judge process of one run: set up the sandbox, start the spawner, read the job, report.

Order matters and is the point of this module:

1. (host root, already inside the new mount/PID/net/IPC namespaces) build the read-only root
   and the private /tmp: only host root may mount, and mounts made now are locked for
   everyone inside;
2. enter the user namespace and become the judge uid: from here on nothing has host privilege;
3. fork the spawner *before reading the job*, so solvers (forked by the spawner) never inherit
   the tests in memory;
4. read the job, hand the spawner only the solution, judge, and write results to the one pipe
   no solver holds.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import time
import types
from typing import TYPE_CHECKING

from koda.sandbox import codec, filesystem, judge, limits, namespaces, spawner, syscalls
from koda.sandbox.namespaces import LayerError
from koda.sandbox.remote import SolverSession

if TYPE_CHECKING:
    from koda.sandbox.policy import SandboxPolicy


def judge_process(header: dict, job_fd: int, result_fd: int, up_w: int, down_r: int) -> None:
    """Entry point of the judge process (a fork of the zygote); never returns."""
    layers = frozenset(header["layers"])
    # Validated by SandboxPolicy in the parent; a plain namespace here keeps ``dataclasses``
    # (and ``inspect``) out of the zygote, whose size every fork pays for.
    policy = types.SimpleNamespace(**header["policy"])
    out = _Results(result_fd)
    syscalls.set_name('koda-judge')
    try:
        owner = namespaces.SOLVER_HOST_ID if "judge_separation" in layers else None
        if "readonly_root" in layers:  # the zygote already stands in the minimal root
            workdir = filesystem.private_mounts(layers, 4 * policy.file_size_mb, owner)
        else:
            workdir = header["workdir"]
        _stdin_from_devnull()
        if "user_namespace" in layers:
            namespaces.ask_for_user_namespace(up_w, down_r)
        namespaces.become("judge", layers)
        limits.no_new_privileges()
        limits.not_dumpable()
        limits.apply_rlimits(policy, "judge")
        limits.close_inherited_fds(keep=(job_fd, result_fd))
        single = header["solvers"] <= 1
        sock = _start_spawner(policy, layers, workdir, job_fd, single)
        job = codec.loads(_read_all(job_fd))
        if job["mode"] == "program":
            out.write(_run_program(sock, policy, _solver_job(job)))
        elif job["mode"] == "tests":
            session = SolverSession(sock, _solver_job(job), single)
            judge.judge_tests(session, job["tests"], policy.timeout_s, lambda r: out.write({"test": r}))
        else:
            _run_batch(sock, policy, job["items"], workdir, out)
        out.write({"done": True})
    except LayerError as err:
        out.write({"setup_error": err.layer, "reason": err.reason})
    except BaseException as err:  # noqa: BLE001 - reported to the parent, which decides
        out.write({"internal_error": f"{type(err).__name__}: {err}"})
    os._exit(0)


class _Results:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def write(self, message: dict) -> None:
        data = codec.dumps(message)
        try:
            while data:
                data = data[os.write(self.fd, data):]
        except OSError:
            pass


def _stdin_from_devnull() -> None:
    fd = os.open("/dev/null", os.O_RDONLY)
    os.dup2(fd, 0)
    os.close(fd)


def _start_spawner(policy: SandboxPolicy, layers: frozenset[str], workdir: str, job_fd: int,
                   single: bool) -> socket.socket:
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        mine.close()
        os.close(job_fd)  # the spawner never holds the job (tests included)
        spawner.spawner_main(theirs, policy, layers, workdir, single)
    theirs.close()
    return mine


def _solver_job(job: dict) -> dict:
    """The part of a job a solver may see: never the tests."""
    return {k: job.get(k) for k in ("mode", "source", "files", "stdin")}


def _run_batch(sock: socket.socket, policy: SandboxPolicy, items: list[dict], workdir: str,
               out: _Results) -> None:
    """Judge several solutions one after another in this sandbox (``SandboxPool.map_tests(batch=)``).

    Between two solutions: every process of the solver uid is killed (``SolverSession.end``),
    the working directory is emptied, the next solver gets a fresh IPC namespace, and kernel
    keyrings are closed to solvers (``limits.deny_keyrings``), so nothing written by one
    solution is there for the next. What they share is what no solver can change: the
    read-only root, the down loopback, the judge. Their output is not kept (``quiet``).
    """
    for i, item in enumerate(items):
        job = {"mode": "tests", "source": item["source"], "files": {}, "stdin": None, "quiet": True}
        session = SolverSession(sock, job, fresh=True)
        last = i == len(items) - 1
        judge.judge_tests(session, item["tests"], policy.timeout_s,
                          lambda r, i=i: out.write({"item": i, "test": r}), final=last)
        if not last:
            _empty(workdir)
        out.write({"item": i, "done": True})


def _empty(directory: str) -> None:
    import shutil

    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)


def _read_all(fd: int) -> bytes:
    parts = []
    while chunk := os.read(fd, 1 << 20):
        parts.append(chunk)
    os.close(fd)
    return b"".join(parts)


def _run_program(sock: socket.socket, policy: SandboxPolicy, job: dict) -> dict:
    """Run the solution as ``__main__`` and wait for it under the wall-clock limit."""
    req_r, req_w = os.pipe()
    resp_r, resp_w = os.pipe()
    start = time.monotonic()
    socket.send_fds(sock, [b"spawn"], [req_r, resp_w])
    os.close(req_r)
    os.close(resp_w)
    pid = int(sock.recv(64))
    with contextlib.suppress(BrokenPipeError), os.fdopen(req_w, "wb") as f:
        f.write(codec.dumps(job))  # the solver reads its job first; nothing follows
    pidfd = os.pidfd_open(pid)
    deadline = start + policy.timeout_s
    notes, buf, timed_out, watch = {}, b"", False, [pidfd, resp_r]
    while True:
        ready, _, _ = select.select(watch, [], [], max(deadline - time.monotonic(), 0))
        if not ready:
            timed_out = True
            break
        if resp_r in ready:
            chunk = os.read(resp_r, 1 << 16)
            if not chunk:
                watch = [pidfd]  # closed: stop polling it (it would be readable forever)
            elif len(buf) < 1 << 16:
                buf += chunk
        if pidfd in ready:
            break
    duration = time.monotonic() - start
    os.close(pidfd)
    status = spawner.reap_solver(pid)  # single mode: the spawner became the solver, our child
    for line in buf.splitlines():
        with contextlib.suppress(codec.CodecError):
            notes.update(codec.loads(line))
    return {"program": _program_status(status, timed_out, notes, duration)}


def _program_status(status: int | None, timed_out: bool, notes: dict, duration: float) -> dict:
    result = {"status": "ok", "returncode": None, "signal": None, "duration_s": round(duration, 6)}
    if status is not None and os.WIFSIGNALED(status):
        result["signal"] = os.WTERMSIG(status)
    elif status is not None:
        result["returncode"] = os.waitstatus_to_exitcode(status)
    if timed_out or result["signal"] == 24:  # SIGXCPU: the CPU-time rlimit
        result["status"] = "timeout"
    elif "syntax" in notes:
        result["status"] = "syntax_error"
    elif "memory" in notes:
        result["status"] = "memory"
    elif result["signal"] is not None:
        result["status"] = "crash"
    elif result["returncode"] != 0:
        result["status"] = "error"
    return result
