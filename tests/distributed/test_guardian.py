"""The guardian stops a process group when the process holding its pipe ends (no ranks needed)."""

import subprocess
import sys
import time

import psutil

from tests.helpers.ranks import REPO, rank_env


def _sleeper_group():
    """A process group of two sleepers, one of which ignores SIGTERM."""
    code = ("import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); time.sleep(600)")
    return subprocess.Popen([sys.executable, "-c", code], start_new_session=True)


def test_closing_the_pipe_stops_the_group_even_a_member_ignoring_sigterm():
    group = _sleeper_group()
    time.sleep(0.5)
    members = [group.pid] + [p.pid for p in psutil.Process(group.pid).children(recursive=True)]
    assert len(members) == 2
    guardian = subprocess.Popen([sys.executable, "-m", "koda.distributed.guardian", str(group.pid)],
                                stdin=subprocess.PIPE, cwd=REPO, env=rank_env(), start_new_session=True)
    time.sleep(1.0)
    assert all(psutil.pid_exists(pid) for pid in members), "the guardian acted before its pipe closed"
    start = time.monotonic()
    guardian.stdin.close()          # what the kernel does when the front process dies
    assert guardian.wait(timeout=30) == 0
    group.wait(timeout=5)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"
                                               for p in members[1:]):
        time.sleep(0.1)
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in members)
    assert time.monotonic() - start < 25          # SIGTERM, then SIGKILL after the grace period
