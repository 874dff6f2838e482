"""Host memory of this process: resident size now, and the peak over one block of code.

``ru_maxrss`` only ever grows, so it cannot say what one phase (building a network) cost
after imports and process-group setup have already set a high mark. Linux keeps the same
high-water mark as ``VmHWM`` and resets it when "5" is written to ``/proc/self/clear_refs``
(Linux >= 4.0): ``PeakWindow`` resets it on entry and reads it on exit.
"""

from __future__ import annotations

import resource
from pathlib import Path

from koda.errors import KodaError

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def _status_bytes(key: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024          # reported in kB
    raise KodaError(f"{_STATUS} has no {key} line: cannot measure peak memory here")


class PeakWindow:
    """``with PeakWindow() as w: ...`` then ``w.start`` (resident bytes on entry), ``w.peak``
    (highest resident bytes inside) and ``w.growth`` (peak - start)."""

    start = peak = 0

    def __enter__(self) -> PeakWindow:
        try:
            _CLEAR_REFS.write_text("5")
        except OSError as err:
            raise KodaError(f"cannot reset the peak-RSS mark ({_CLEAR_REFS}: {err.strerror})") from None
        self.start = rss_bytes()
        return self

    def __exit__(self, *exc) -> None:
        self.peak = _status_bytes("VmHWM")

    @property
    def growth(self) -> int:
        return self.peak - self.start
