"""Shared pieces of the sandbox tests: a short policy and a look at the host's process table."""

import os

import pytest

from koda.sandbox import SandboxPolicy, namespaces

# FAST is for runs expected to time out; SAFE for everything else, so a loaded CI machine
# does not turn an expected crash or error into a timeout.
FAST = SandboxPolicy(timeout_s=1.0, memory_mb=256, nproc=16)
SAFE = SandboxPolicy(timeout_s=10.0, memory_mb=256, nproc=16)


def sandbox_processes() -> list[int]:
    """Host PIDs still owned by the judge or solver uid: must be none once a run returned."""
    ids = {namespaces.JUDGE_HOST_ID, namespaces.SOLVER_HOST_ID}
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/status") as f:
                    uid = next(int(line.split()[1]) for line in f if line.startswith("Uid:"))
            except (OSError, StopIteration):
                continue
            if uid in ids:
                found.append(int(name))
    return found


@pytest.fixture
def no_leftovers():
    """Fails the test if any sandbox process outlives its run."""
    yield
    assert sandbox_processes() == []
