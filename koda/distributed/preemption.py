"""Stopping a run cleanly on SIGTERM or SIGUSR1 (a scheduler's preemption notice) or SIGINT (Ctrl-C).

SLURM's convention (``sbatch --signal=USR1@120``, or TERM before a kill) is: save at the next
step boundary, exit 0, and let the requeued job ``--resume``. A rank cannot save on its
own the moment the signal arrives: under ZeRO-3 a save is a collective, and the ranks may
be in the middle of a step's gathers. So the handler only records the signal, and at each
step boundary the ranks sum their flags (one tiny all-reduce) and all stop together if any
rank was told to: a rank the signal missed still saves with the others.

``koda train`` (the front process) forwards the signals it receives to the ranks
(``koda.distributed.local_launch``): DeepSpeed's launcher would otherwise die on SIGUSR1
or kill the ranks on SIGTERM before they save.
"""

from __future__ import annotations

import os
import signal

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)   # SIGINT: Ctrl-C in a terminal


class StopRequest:
    """The signal handler's flag. Installed by each rank as early as possible: until then
    SIGUSR1 (default action: terminate) kills the rank. SIGTERM after a request kills it at once."""

    def __init__(self):
        self.signal: int | None = None

    def install(self) -> StopRequest:
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._record)
        return self

    def _record(self, signum, frame) -> None:
        if self.signal is not None:
            if signum == signal.SIGTERM:
                # SIGTERM after a stop request means "now": the front's second signal, or
                # DeepSpeed's launch.py after a rank failed. Take the default action.
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)
            return          # a repeated SIGUSR1 / SIGINT (sent to the rank and forwarded) is the same request
        self.signal = signum

    @property
    def requested(self) -> bool:
        return self.signal is not None


_REQUEST = StopRequest()


def install() -> StopRequest:
    """The process-wide request, with its handlers installed."""
    return _REQUEST.install()


def current() -> StopRequest:
    return _REQUEST
