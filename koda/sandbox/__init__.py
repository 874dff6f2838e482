"""Run untrusted Python (generated solutions) in an isolated sandbox and judge it against tests.

The stable API (analysis, RL rewards and ``koda exec`` call only these)::

    run_program(source, *, policy=None, stdin=None, files=None) -> ProgramResult
    run_tests(solution, tests, *, policy=None) -> ExecReport
    SandboxPool(workers=None, policy=None)   # .run_program / .run_tests / .map_tests / .map_programs
    shared_pool() -> SandboxPool               # the one behind run_program / run_tests
    SandboxPolicy(timeout_s=5.0, memory_mb=512, nproc=32, file_size_mb=16, output_bytes=1 MiB,
                  allow_weaker=False)
    probe() -> Probe                          # which isolation layers this host offers

The module-level functions share one lazily started pool (one zygote per CPU, started on
first use) so repeated calls pay process start-up once. See ``docs/sandbox.md``.
"""

from __future__ import annotations

import importlib
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from koda.sandbox.layers import ALL_LAYERS, IsolationError, Probe, probe
    from koda.sandbox.policy import SandboxPolicy
    from koda.sandbox.pool import SandboxError, SandboxPool
    from koda.sandbox.results import ExecReport, ProgramResult, TestResult

# Imported on first use (PEP 562): the zygote imports ``koda.sandbox.zygote`` and must not pay
# for the pool's threads and subprocess machinery in every forked sandbox.
_LAZY = {"ALL_LAYERS": "layers", "IsolationError": "layers", "Probe": "layers", "probe": "layers",
         "SandboxPolicy": "policy", "SandboxError": "pool", "SandboxPool": "pool",
         "ExecReport": "results", "ProgramResult": "results", "TestResult": "results"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"koda.sandbox.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'koda.sandbox' has no attribute {name!r}")

__all__ = ["ALL_LAYERS", "ExecReport", "IsolationError", "Probe", "ProgramResult", "SandboxError",
           "SandboxPolicy", "SandboxPool", "TestResult", "probe", "run_program", "run_tests", "shared_pool"]

_default: SandboxPool | None = None
_default_lock = threading.Lock()


def _pool() -> SandboxPool:
    global _default
    with _default_lock:
        if _default is None:
            import atexit

            from koda.sandbox.pool import SandboxPool

            _default = SandboxPool()
            atexit.register(_default.close)
        return _default


def shared_pool() -> SandboxPool:
    """The process-wide pool the module-level functions use (started on first call)."""
    return _pool()


def run_program(source: str, *, policy: SandboxPolicy | None = None, stdin: str | None = None,
                files: dict[str, str] | None = None) -> ProgramResult:
    """Run ``source`` as ``__main__`` in the sandbox; ``files`` are written into its working dir."""
    return _pool().run_program(source, policy=policy, stdin=stdin, files=files)


def run_tests(solution: str, tests: str, *, policy: SandboxPolicy | None = None) -> ExecReport:
    """Judge ``solution`` against ``tests`` (top-level asserts and ``def test_*``), per test."""
    return _pool().run_tests(solution, tests, policy=policy)
