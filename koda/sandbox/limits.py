"""Per-process confinement that needs no privileges: rlimits, inherited fds, environment.

These are applied by the solver process to itself right before it runs untrusted code, and
(looser) by the judge, because both are ordinary forks of the zygote: nothing is exec'd, so
each limit must be set in-process rather than through a wrapper command.
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
from typing import TYPE_CHECKING

from koda.sandbox import syscalls

if TYPE_CHECKING:  # the sandbox side gets the policy as a plain namespace (runner.py)
    from koda.sandbox.policy import SandboxPolicy

_MB = 1 << 20
# The judge holds the tests and decoded values; it is trusted code, so it only gets a cap that
# stops a runaway test from hurting the host.
_JUDGE_MEMORY_FACTOR = 2


def apply_rlimits(policy: SandboxPolicy, role: str) -> None:
    """CPU, address space, file size, process count, core dumps.

    RLIMIT_CPU is one second above the wall-clock timeout: the wall clock is the real limit
    (it also catches sleeping), this is the backstop that needs nobody watching. The judge
    gets no CPU or process cap because it lives for all tests of a run and forks the solvers.
    """
    def cap(kind: int, value: int) -> None:
        resource.setrlimit(kind, (value, value))

    cap(resource.RLIMIT_CORE, 0)
    cap(resource.RLIMIT_FSIZE, policy.file_size_mb * _MB)
    if role == "solver":
        cap(resource.RLIMIT_AS, policy.memory_mb * _MB)
        cap(resource.RLIMIT_CPU, math.ceil(policy.timeout_s) + 1)
        cap(resource.RLIMIT_NPROC, policy.nproc)
    else:
        cap(resource.RLIMIT_AS, _JUDGE_MEMORY_FACTOR * policy.memory_mb * _MB + 256 * _MB)


def close_inherited_fds(keep: tuple[int, ...] = ()) -> None:
    """Close every fd but stdio and ``keep``: the solver must not hold the judge's result pipe."""
    keep_set = {0, 1, 2, *keep}
    try:
        fds = [int(n) for n in os.listdir("/proc/self/fd")]
    except OSError:  # no /proc: close the usual range blindly
        fds = list(range(3, 1024))
    for fd in fds:
        if fd not in keep_set:
            with contextlib.suppress(OSError):
                os.close(fd)


def clean_environment(workdir: str) -> dict[str, str]:
    """The whole environment the solver sees: built from nothing, so no parent secret reaches it."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir,
            "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0"}


def set_environment(env: dict[str, str]) -> None:
    os.environ.clear()
    os.environ.update(env)


def no_new_privileges() -> None:
    """Setuid binaries stop raising privileges; stops a solver from regaining what it dropped."""
    syscalls.prctl(syscalls.PR_SET_NO_NEW_PRIVS, 1)


def not_dumpable() -> None:
    """The judge's memory (tests, expected values) cannot be ptraced or read through /proc."""
    syscalls.prctl(syscalls.PR_SET_DUMPABLE, 0)
