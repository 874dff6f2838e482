"""Per-process confinement that needs no privileges: rlimits, inherited fds, environment.

These are applied by the solver process to itself right before it runs untrusted code, and
(looser) by the judge, because both are ordinary forks of the zygote: nothing is exec'd, so
each limit must be set in-process rather than through a wrapper command.
"""

from __future__ import annotations

import contextlib
import ctypes
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


# add_key, request_key, keyctl per machine; the audit arch constant seccomp reports for it
_KEYRING_CALLS = {"x86_64": (0xC000003E, (248, 249, 250)), "aarch64": (0xC00000B7, (217, 218, 219))}


def deny_keyrings() -> None:
    """A seccomp filter that fails the kernel keyring calls with EPERM.

    Keyrings are the one piece of kernel state that belongs to a uid in a user namespace and
    outlives the processes that wrote it, so without this a solution could leave a note for the
    next solution judged in the same sandbox (``SandboxPool.map_tests(batch=...)``). Nothing a
    Python program legitimately does needs them (container runtimes block them too).
    """
    fprog = keyring_filter()
    if fprog is None:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) != 0:  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
        err = ctypes.get_errno()
        raise OSError(err, f"seccomp: {os.strerror(err)}")


_filter_cache: list = []


def keyring_filter():
    """The BPF program of ``deny_keyrings``, built once (the zygote does it before forking)."""
    if _filter_cache:
        return _filter_cache[0]
    arch = _KEYRING_CALLS.get(os.uname().machine)
    if arch is None:
        _filter_cache.append(None)
        return None
    audit_arch, numbers = arch
    ld, jeq, ret = 0x20, 0x15, 0x06  # BPF_LD|BPF_W|BPF_ABS, BPF_JMP|BPF_JEQ|BPF_K, BPF_RET|BPF_K
    allow, eperm = 0x7FFF0000, 0x00050000 | 1  # SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO | EPERM
    n = len(numbers)
    prog = [(ld, 0, 0, 4), (jeq, 1, 0, audit_arch), (ret, 0, 0, allow), (ld, 0, 0, 0)]
    prog += [(jeq, n - i, 0, nr) for i, nr in enumerate(numbers)]  # match -> jump to "deny"
    prog += [(ret, 0, 0, allow), (ret, 0, 0, eperm)]

    class Filter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte),
                    ("k", ctypes.c_uint)]

    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Filter))]

    filters = (Filter * len(prog))(*[Filter(*f) for f in prog])
    _filter_cache.append(Prog(len(prog), filters))
    _filter_cache.append(filters)  # keep the array alive alongside the struct pointing into it
    return _filter_cache[0]
