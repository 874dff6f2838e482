"""The topology file: a small YAML description of the cluster as a 4-D torus, validated at load.

Format (every section but ``torus`` and ``hosts`` is optional; docs/launching.md has the full
reference and launchers/topologies/ has examples)::

    torus: [4, 4, 2, 2]          # C_d1 x C_d2 x C_d3 x C_d4, each >= 1
    slots_per_host: 1            # ranks per host (GPUs, or CPU processes); same on every host
    hosts:                       # one torus node per host, listed in the order you know them
      - {name: node-000, coords: [0, 0, 0, 0], addr: 10.1.0.1}   # addr defaults to name
      - node-001                 # a bare name: coords assigned in order (all or none)
    links: {alpha: 5.0e-6, beta: 1.0e-7, gamma: 4.0e-11, bandwidth: 2.5e10}
    queue: {theta: 1000.0, mu: 65536.0, sigma: 1.46e6, dt: 1.0e-5, steps: 20000, seed: 0,
            scheme: exact}
    parallel: {expert_parallel_size: 8, data_before_expert: false}
    launch: {launcher: pdsh, accelerator: auto, master_port: 29500, master_addr: 10.1.0.1,
             env: {NCCL_DEBUG: WARN}}
    workload: {dense_params: 1.0e9, expert_params: 6.0e9, ...}   # sizes for the cost figures

Every problem is one line naming the file, the field and the value, raised as ``TopologyError``
before anything is written or launched.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import yaml

from koda.errors import KodaError
from koda.topology.latency import LinkModel
from koda.topology.queue import SCHEMES, OUQueue
from koda.topology.torus import Torus

_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
ACCELERATORS = ("auto", "cpu", "cuda")
LAUNCHERS = ("pdsh", "openmpi", "mvapich", "no_ssh", "local")
TORUS_NDIM = 4


class TopologyError(KodaError):
    """An invalid topology file; the message is one line: ``FILE: field: problem``."""


def _fail(where: str, msg: str) -> typing.NoReturn:
    raise TopologyError(f"{where}: {msg}")


# --- sections -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LinkSpec:
    """Link parameters of the latency model (see koda.topology.latency): s, s/hop, s/byte, bytes/s.

    Defaults sketch a 200 Gb/s fabric: 5 us start-up, 100 ns per hop, and gamma = 1 / bandwidth
    so a queue of q bytes ahead of a message delays it by the time the link needs to drain q.
    """

    alpha: float = 5.0e-6
    beta: float = 1.0e-7
    gamma: float = 4.0e-11
    bandwidth: float = 2.5e10

    def __post_init__(self) -> None:
        for name in ("alpha", "beta", "gamma"):
            if getattr(self, name) < 0:
                _fail(f"links.{name}", f"{getattr(self, name)} must be >= 0")
        if self.bandwidth <= 0:
            _fail("links.bandwidth", f"{self.bandwidth} must be > 0")

    def model(self) -> LinkModel:
        return LinkModel(self.alpha, self.beta, self.gamma, self.bandwidth)


@dataclass(frozen=True)
class QueueSpec:
    """OU egress-queue parameters and how ``koda topology show`` simulates them.

    Defaults: 1 ms relaxation time (theta 1000/s), 64 KiB mean depth, stationary standard
    deviation 32 KiB (sigma = 32768 sqrt(2 theta)).
    """

    theta: float = 1000.0
    mu: float = 65536.0
    sigma: float = 1.4654e6
    dt: float = 1.0e-5
    steps: int = 20000
    seed: int = 0
    scheme: str = "exact"

    def __post_init__(self) -> None:
        if self.theta <= 0:
            _fail("queue.theta", f"{self.theta} must be > 0")
        if self.sigma < 0:
            _fail("queue.sigma", f"{self.sigma} must be >= 0")
        if self.dt <= 0:
            _fail("queue.dt", f"{self.dt} must be > 0")
        if self.steps < 1:
            _fail("queue.steps", f"{self.steps} must be >= 1")
        if self.scheme not in SCHEMES:
            _fail("queue.scheme", f"{self.scheme!r} is not one of {', '.join(SCHEMES)}")

    def process(self) -> OUQueue:
        return OUQueue(self.theta, self.mu, self.sigma)


@dataclass(frozen=True)
class ParallelSpec:
    """Parallel layout: expert-parallel size E; data parallelism takes the rest (W / E).

    ``data_before_expert`` mirrors DeepSpeed's ``use_data_before_expert_parallelism``, which
    swaps which groups are consecutive ranks (koda.topology.groups).
    """

    expert_parallel_size: int = 1
    data_before_expert: bool = False

    def __post_init__(self) -> None:
        if self.expert_parallel_size < 1:
            _fail("parallel.expert_parallel_size", f"{self.expert_parallel_size} must be >= 1")


@dataclass(frozen=True)
class LaunchSpec:
    """How ``koda launch`` starts the job.

    launcher: ``pdsh`` or ``openmpi`` or ``mvapich`` (DeepSpeed's multi-node runners, from one
    login node), ``no_ssh`` (run ``koda launch --node-rank K`` on every node yourself, e.g. from
    srun), ``local`` (every node of the file as a separate launcher on this machine, on loopback:
    for tests). master_addr defaults to the addr of the host that gets rank 0. accelerator:
    ``auto``, ``cpu`` or ``cuda``, the DS_ACCELERATOR every node gets (koda.topology.launch).
    """

    launcher: str = "pdsh"
    accelerator: str = "auto"
    master_addr: str | None = None
    master_port: int = 29500
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.launcher not in LAUNCHERS:
            _fail("launch.launcher", f"{self.launcher!r} is not one of {', '.join(LAUNCHERS)}")
        if self.accelerator not in ACCELERATORS:
            _fail("launch.accelerator", f"{self.accelerator!r} is not one of {', '.join(ACCELERATORS)}")
        if not 1 <= self.master_port <= 65535:
            _fail("launch.master_port", f"{self.master_port} is not a TCP port (1..65535)")


@dataclass(frozen=True)
class WorkloadSpec:
    """Model and batch sizes the per-step cost figures are computed for (koda.topology.cost)."""

    dense_params: float = 1.0e9
    expert_params: float = 6.0e9
    bytes_per_param: int = 2
    tokens_per_rank: int = 4096
    hidden: int = 2048
    moe_layers: int = 24
    top_k: int = 2
    bytes_per_activation: int = 2

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if getattr(self, f.name) < 0:
                _fail(f"workload.{f.name}", f"{getattr(self, f.name)} must be >= 0")


@dataclass(frozen=True)
class HostSpec:
    """One machine: its name, rank slots, torus coordinates and address (defaults to name)."""

    name: str
    slots: int | None = None
    coords: tuple[int, ...] | None = None
    addr: str | None = None


@dataclass(frozen=True)
class Topology:
    """A validated topology file. ``hosts`` keep file order, each with its coordinates filled in."""

    path: str
    torus: Torus
    slots_per_host: int
    hosts: tuple[HostSpec, ...]
    links: LinkSpec
    queue: QueueSpec
    parallel: ParallelSpec
    launch: LaunchSpec
    workload: WorkloadSpec

    @property
    def world_size(self) -> int:
        return self.slots_per_host * len(self.hosts)

    def with_expert_parallel(self, ep_size: int) -> Topology:
        """This topology with the expert-parallel size of the run's DeepSpeed plan, the layout's
        source of truth (koda.topology.layout): groups and placement then follow the plan."""
        if ep_size < 1 or self.world_size % ep_size:
            where = f"{self.path}: parallel.expert_parallel_size"
            _fail(where, f"{ep_size} does not divide world size {self.world_size}")
        return dataclasses.replace(self, parallel=dataclasses.replace(self.parallel, expert_parallel_size=ep_size))

    @cached_property
    def host_nodes(self) -> np.ndarray:
        """Torus node index of every host, in file order, ``[n_hosts]`` (cached: placement asks often)."""
        return np.asarray(self.torus.index(np.array([h.coords for h in self.hosts])), dtype=np.int64).reshape(-1)


# --- generic checking ---------------------------------------------------------------------------


def _typename(t) -> str:
    return getattr(t, "__name__", str(t))


def _check(value, t, where: str):
    """Return ``value`` as type ``t`` or fail with a one-line message naming ``where``."""
    origin = typing.get_origin(t)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(t)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _check(value, inner, where)
    if t is bool:
        if not isinstance(value, bool):
            _fail(where, f"{value!r} is not true/false")
        return value
    if t is int:
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(where, f"{value!r} is not an integer")
        return value
    if t is float:
        # PyYAML follows YAML 1.1, which reads 1e9 and 2.5e10 (no dot or no exponent sign) as
        # strings; accept those spellings rather than make users write 2.5e+10.
        if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
            return float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            _fail(where, f"{value!r} is not a number")
        return float(value)
    if t is str:
        if not isinstance(value, str) or not value:
            _fail(where, f"{value!r} is not a non-empty string")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            _fail(where, f"{value!r} is not a list")
        (inner, _) = typing.get_args(t)
        return tuple(_check(v, inner, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            _fail(where, f"{value!r} is not a mapping")
        # Environment values: strings, or numbers written bare in YAML (NCCL_NTHREADS: 4).
        for k, v in value.items():
            _check(k, str, where)
            if isinstance(v, bool) or not isinstance(v, str | int | float):
                _fail(f"{where}.{k}", f"{v!r} is not a string or number")
        return {k: str(v) for k, v in value.items()}
    raise TypeError(f"unsupported field type {_typename(t)}")  # a bug here, not in the file


def _section(cls, raw, where: str):
    """Build dataclass ``cls`` from mapping ``raw``: unknown keys and bad types are one-line errors."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        _fail(where, f"expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            _fail(f"{where}.{key}" if where else str(key), f"unknown key (known: {', '.join(names)})")
    for f in dataclasses.fields(cls):
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and f.name not in raw:
            _fail(f"{where}.{f.name}" if where else f.name, "missing")
    kwargs = {k: _check(v, hints[k], f"{where}.{k}" if where else k) for k, v in raw.items()}
    return cls(**kwargs)


# --- the file -----------------------------------------------------------------------------------

_TOP_KEYS = ("torus", "slots_per_host", "hosts", "links", "queue", "parallel", "launch", "workload")


def load_topology(path: str | Path) -> Topology:
    """Read and validate a topology file; raise ``TopologyError`` (one line) on the first problem."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as err:
        raise TopologyError(f"{path}: cannot read: {err.strerror}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise TopologyError(f"{path}: not valid YAML{at}: {getattr(err, 'problem', err)}") from None
    try:
        return parse_topology(raw, str(path))
    except TopologyError as err:
        raise TopologyError(f"{path}: {err}") from None


def parse_topology(raw, path: str = "<topology>") -> Topology:
    """Validate an already-parsed YAML document (errors without the file name prefix)."""
    if not isinstance(raw, dict):
        _fail("file", f"expected a mapping with keys {', '.join(_TOP_KEYS)}")
    for key in raw:
        if key not in _TOP_KEYS:
            _fail(str(key), f"unknown key (known: {', '.join(_TOP_KEYS)})")
    if "torus" not in raw:
        _fail("torus", f"missing: give the {TORUS_NDIM} torus dimensions, e.g. [4, 4, 2, 2]")
    dims = _check(raw["torus"], tuple[int, ...], "torus")
    if len(dims) != TORUS_NDIM or any(d < 1 for d in dims):
        _fail("torus", f"{list(dims)} must be {TORUS_NDIM} integers >= 1 (use 1 for unused dimensions)")
    torus = Torus(dims)
    slots = _check(raw.get("slots_per_host", 1), int, "slots_per_host")
    if slots < 1:
        _fail("slots_per_host", f"{slots} must be >= 1")
    hosts = _hosts(raw.get("hosts"), torus, slots)
    parallel = _section(ParallelSpec, raw.get("parallel"), "parallel")
    world = slots * len(hosts)
    if world % parallel.expert_parallel_size:
        _fail(
            "parallel.expert_parallel_size",
            f"{parallel.expert_parallel_size} does not divide world size {world} ({len(hosts)} hosts x {slots} slots)",
        )
    return Topology(
        path=path,
        torus=torus,
        slots_per_host=slots,
        hosts=hosts,
        links=_section(LinkSpec, raw.get("links"), "links"),
        queue=_section(QueueSpec, raw.get("queue"), "queue"),
        parallel=parallel,
        launch=_section(LaunchSpec, raw.get("launch"), "launch"),
        workload=_section(WorkloadSpec, raw.get("workload"), "workload"),
    )


def _hosts(raw, torus: Torus, slots: int) -> tuple[HostSpec, ...]:
    if not isinstance(raw, list) or not raw:
        _fail("hosts", "expected a non-empty list of hosts (names, or {name, slots, coords, addr})")
    shape = "x".join(map(str, torus.dims))
    if len(raw) > torus.size:
        _fail("hosts", f"{len(raw)} hosts do not fit a {shape} torus of {torus.size} positions")
    hosts = [_section(HostSpec, {"name": h} if isinstance(h, str) else h, f"hosts[{i}]") for i, h in enumerate(raw)]
    with_coords = [h.coords is not None for h in hosts]
    if any(with_coords) and not all(with_coords):
        i = with_coords.index(False)
        _fail(
            f"hosts[{i}].coords",
            "missing: give coords for every host or for none (then they follow file order)",
        )
    names: dict[str, int] = {}
    seen: dict[tuple[int, ...], int] = {}
    out = []
    for i, h in enumerate(hosts):
        if h.name in names:
            _fail(f"hosts[{i}].name", f"{h.name!r} already used by hosts[{names[h.name]}]")
        names[h.name] = i
        if h.slots is not None and h.slots != slots:
            _fail(
                f"hosts[{i}].slots",
                f"{h.slots} does not match slots_per_host {slots} (DeepSpeed's launcher gives "
                "local_rank = rank % slots, so every host needs the same count)",
            )
        coords = h.coords if h.coords is not None else tuple(int(c) for c in torus.coords(i))
        if len(coords) != torus.ndim:
            _fail(f"hosts[{i}].coords", f"{list(coords)} needs {torus.ndim} coordinates for torus {shape}")
        for k, (c, d) in enumerate(zip(coords, torus.dims, strict=True)):
            if not 0 <= c < d:
                _fail(
                    f"hosts[{i}].coords",
                    f"{list(coords)} out of range: coordinate {k} must be in 0..{d - 1} for torus {shape}",
                )
        if coords in seen:
            j = seen[coords]
            _fail(f"hosts[{i}].coords", f"{list(coords)} already used by hosts[{j}] ({hosts[j].name})")
        seen[coords] = i
        out.append(dataclasses.replace(h, slots=slots, coords=coords, addr=h.addr or h.name))
    return tuple(out)
