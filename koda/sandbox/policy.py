"""The limits one sandboxed run gets, validated once where they are made."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from koda.errors import ConfigError


@dataclass(frozen=True, kw_only=True, slots=True)
class SandboxPolicy:
    """Resource limits and the isolation stance for one run.

    ``timeout_s`` is wall-clock time per test under ``run_tests`` and for the whole program
    under ``run_program``; CPU time is capped slightly above it so a busy loop also dies by
    ``RLIMIT_CPU`` if the wall-clock kill were ever late. ``memory_mb`` caps the address space
    of each untrusted process (``RLIMIT_AS``): generous enough for CPython (about 30 MB of
    mappings at start) plus the solution. ``nproc`` counts threads too, so a thread bomb hits it.
    """

    timeout_s: float = 5.0
    memory_mb: int = 512
    nproc: int = 32
    file_size_mb: int = 16  # RLIMIT_FSIZE, and the private tmpfs is this size times 4
    output_bytes: int = 1 << 20  # kept per stream (stdout, stderr); the rest is read and dropped
    allow_weaker: bool = False  # run even when an isolation layer is missing on this host

    def __post_init__(self) -> None:
        if not 0 < self.timeout_s <= 3600:
            raise ConfigError(f"timeout_s {self.timeout_s} must be in (0, 3600]")
        if not 32 <= self.memory_mb <= 1 << 20:
            raise ConfigError(f"memory_mb {self.memory_mb} must be in [32, 1048576]")
        if not 1 <= self.nproc <= 4096:
            raise ConfigError(f"nproc {self.nproc} must be in [1, 4096]")
        if not 1 <= self.file_size_mb <= 1 << 14:
            raise ConfigError(f"file_size_mb {self.file_size_mb} must be in [1, 16384]")
        if not 0 <= self.output_bytes <= 1 << 30:
            raise ConfigError(f"output_bytes {self.output_bytes} must be in [0, 2**30]")

    def to_dict(self) -> dict:
        return asdict(self)
