"""A sidecar that stops a launcher's process group when the process that started it dies.

``koda train`` starts DeepSpeed's launcher in a session of its own (so a terminal's Ctrl-C
reaches only the front, which forwards it as a stop request). The price: if the front dies
without cleaning up (SIGKILL, an OOM kill), the launcher and the ranks would live on as
orphans, holding the port and the cores. The guardian, started beside the launcher in its
own session, holds the read end of a pipe whose write end only the front holds; the kernel
closes it however the front ends, and the guardian then sends SIGTERM to the launcher's
group, and SIGKILL to what is left after a grace period. Usage (by ``local_launch.run``)::

    python -m koda.distributed.guardian <launcher pgid>   # stdin: the pipe
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time

GRACE_S = 10.0


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_group(pgid: int, grace_s: float = GRACE_S) -> None:
    """SIGTERM to the group, then SIGKILL once `grace_s` has passed with members left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and _group_alive(pgid):
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def main(argv: list[str]) -> int:
    pgid = int(argv[0])
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):     # only the pipe ends the guardian
        signal.signal(sig, signal.SIG_IGN)
    while sys.stdin.buffer.read(1):          # blocks until EOF: the front has exited or closed the pipe
        pass
    stop_group(pgid)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
