"""DeepSpeed hostfiles (``host slots=N``) written in placement order, and read back.

The line order is the placement: DeepSpeed's launcher numbers ranks host by host in the order
of this file (koda.topology.groups), so a hostfile is only correct together with the topology
file it came from. Comments go on their own lines because DeepSpeed's parser
(``deepspeed.launcher.runner._parse_hostfile``) and MPI hostfile readers differ on trailing ones.
"""

from __future__ import annotations

from pathlib import Path

from koda.errors import KodaError
from koda.topology.placement import Placement
from koda.topology.spec import Topology


def hostfile_text(topology: Topology, placement: Placement) -> str:
    """The hostfile, one ``name slots=N`` line per host in placement order."""
    s = topology.slots_per_host
    held = "global rank k" if s == 1 else f"global ranks {s}k .. {s}k+{s - 1}"
    lines = [
        f"# DeepSpeed hostfile written by koda launch from {topology.path}",
        f"# placement: {placement.method}; host line k holds {held}",
    ]
    lines += [f"{topology.hosts[h].name} slots={s}" for h in placement.order]
    return "\n".join(lines) + "\n"


def write_hostfile(topology: Topology, placement: Placement, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(hostfile_text(topology, placement))
    return path


def read_hostfile(path: str | Path) -> list[tuple[str, int]]:
    """``(host, slots)`` in file order, with DeepSpeed's rules: comments and blank lines skipped."""
    out = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) < 2 or not parts[1].startswith("slots=") or not parts[1][6:].isdigit():
            raise KodaError(f"{path}:{n}: expected 'host slots=N', got {line!r}")
        out.append((parts[0], int(parts[1][6:])))
    return out
