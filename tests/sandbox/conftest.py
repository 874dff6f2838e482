"""Shared pieces of the sandbox tests: a short policy and a look at the host's process table."""

import os

import pytest

from koda.sandbox import SandboxPolicy, namespaces

# FAST is for runs expected to time out; SAFE for everything else, so a loaded CI machine
# does not turn an expected crash or error into a timeout.
FAST = SandboxPolicy(timeout_s=1.0, memory_mb=256, nproc=16)
SAFE = SandboxPolicy(timeout_s=10.0, memory_mb=256, nproc=16)


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _descends_from_us(pid: int) -> bool:
    me = os.getpid()
    try:
        while pid > 1:
            pid = _parent(pid)
            if pid == me:
                return True
    except OSError:
        pass
    return False


def sandbox_processes() -> list[int]:
    """Host PIDs of this test session's sandboxes still owned by the judge or solver uid.

    Only our own descendants count: other programs on the machine may be using the sandbox.
    """
    ids = {namespaces.JUDGE_HOST_ID, namespaces.SOLVER_HOST_ID}
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/status") as f:
                    uid = next(int(line.split()[1]) for line in f if line.startswith("Uid:"))
            except (OSError, StopIteration):
                continue
            if uid in ids and _descends_from_us(int(name)):
                found.append(int(name))
    return found


@pytest.fixture
def no_leftovers():
    """Fails the test if any sandbox process outlives its run."""
    yield
    assert sandbox_processes() == []
