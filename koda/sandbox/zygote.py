"""The zygote: a small, long-lived process that forks one sandbox per job.

Starting CPython costs tens of milliseconds; forking a warm one costs well under one. The
zygote is started once per pool worker with an environment built from nothing and has
imported every module a sandbox needs, so each run is fork + namespaces + setup.

It never reads a job's content: the pool passes it the pipe ends (SCM_RIGHTS) and a header of
limits, so nothing of one job (tests, expected values) is ever in the zygote's memory for a
later job's fork to inherit. Per job::

    zygote --unshare(pid,net,ipc)--fork--> judge (PID 1 of the new PID namespace)
    zygote --setns back home, write the judge's uid/gid maps, kill it at the deadline

Killing the judge, PID 1 of the namespace, makes the kernel kill every process in it.
"""

from __future__ import annotations

import gc
import os
import select
import signal
import socket
import time

from koda.sandbox import codec, filesystem, limits, namespaces, runner, syscalls

HOME: namespaces.Home  # set in main()


def main(control_fd: int, root_paths: list[str] | None = None) -> None:
    """Serve jobs from the pool until it closes the control socket (or dies: the socket closes).

    No parent-death signal: it fires when the *thread* that started the zygote ends, and pool
    threads come and go; a job in flight when the pool dies still ends at its deadline.
    """
    syscalls.set_name('koda-zygote')
    syscalls.prctl(syscalls.PR_SET_CHILD_SUBREAPER, 1)
    global HOME
    HOME = namespaces.Home()
    if root_paths is not None:  # full isolation: stand in the minimal read-only root from now on
        filesystem.enter_minimal_root(root_paths)
    codec.allow_big_ints()
    limits.keyring_filter()  # built once here, not in every solver
    # Every sandbox is a fork of this process. Freezing moves all objects out of the collector's
    # reach and disabling it stops collections in the (short-lived) harness processes: either
    # would otherwise write to most pages and turn the cheap copy-on-write fork into a copy.
    gc.freeze()
    gc.disable()
    sock = socket.socket(fileno=control_fd)
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(sock, 1 << 16, 4)
        except OSError:
            return
        if not msg:
            return
        try:
            report = run_job(codec.loads(msg), fds)
        finally:
            for fd in fds:
                os.close(fd)
        sock.send(codec.dumps(report))
        if report.get("fatal"):
            return


def run_job(header: dict, fds: list[int]) -> dict:
    """Fork the sandbox for one job and wait for it, killing it at the deadline."""
    job_fd, result_fd, out_fd, err_fd = fds
    layers = frozenset(header["layers"])
    workdir = None
    if "readonly_root" not in layers:  # weaker mode: a private directory on the host instead
        import tempfile  # only here: keeps it (and shutil, random, bz2...) out of every fork

        workdir = header["workdir"] = tempfile.mkdtemp(prefix="koda-sandbox-")
        if "judge_separation" in layers:
            os.chown(workdir, namespaces.SOLVER_HOST_ID, namespaces.SOLVER_HOST_ID)
    start = time.monotonic()
    report: dict = {"timed_out": False, "status": None}
    try:
        pid = _fork_judge(header, layers, job_fd, result_fd, out_fd, err_fd)
        report.update(_wait_judge(pid, start + header["deadline_s"]))
    except namespaces.LayerError as err:
        report["setup_error"] = f"{err.layer}: {err.reason}"
    except OSError as err:  # e.g. setns home refused: this zygote cannot serve another job
        report["setup_error"] = f"zygote: {err}"
        report["fatal"] = True
    finally:
        if workdir:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
    return report


def _fork_judge(header, layers, job_fd, result_fd, out_fd, err_fd) -> int:
    """Fork the judge into fresh namespaces, grant its user namespace, return its pid."""
    up_r, up_w = os.pipe()
    down_r, down_w = os.pipe()
    try:
        pid = HOME.fork_into(layers)
        if pid == 0:
            try:
                os.setsid()  # its own session and process group, away from the pool's terminal
                os.dup2(out_fd, 1)
                os.dup2(err_fd, 2)
                HOME.close()
                for fd in (up_r, down_w, out_fd, err_fd):
                    os.close(fd)
                runner.judge_process(header, job_fd, result_fd, up_w, down_r)
            finally:
                os._exit(70)
        if "user_namespace" in layers:
            namespaces.grant_user_namespace(pid, up_r, down_w)
        return pid
    finally:
        for fd in (up_r, up_w, down_r, down_w):
            os.close(fd)


def _wait_judge(pid: int, deadline: float) -> dict:
    pidfd = os.pidfd_open(pid)
    try:
        ready, _, _ = select.select([pidfd], [], [], max(deadline - time.monotonic(), 0))
        timed_out = not ready
        if timed_out:
            os.kill(pid, signal.SIGKILL)  # PID 1 of its namespace: takes every process in it along
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(pidfd)
    return {"timed_out": timed_out, "status": status}
