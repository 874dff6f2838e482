"""What every training rank does first, whichever stage it runs."""

from __future__ import annotations

from koda.distributed import comm, preemption
from koda.distributed.accelerator import configure_accelerator, configure_cpu_threads


def start_rank() -> preemption.StopRequest:
    """Install the stop-signal handlers (before anything slow: until then a forwarded SIGUSR1
    would end the rank), pick the accelerator, join the process group, size the CPU thread
    pool, and quiet DeepSpeed's info logging. Returns the process's stop request."""
    stop = preemption.install()
    configure_accelerator()
    comm.init()
    configure_cpu_threads()
    import deepspeed.utils.logging as ds_logging

    ds_logging.logger.setLevel("WARNING")
    return stop
