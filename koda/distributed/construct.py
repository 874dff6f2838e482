"""Build a network so that no rank holds more than its ZeRO-3 share plus one module of it.

Under ZeRO stage 3 the network is constructed inside ``deepspeed.zero.Init``: each module's
parameters exist whole only until that module's ``__init__`` returns, when they are
broadcast from rank 0 and cut to this rank's partition. The largest transient is therefore
one module (an MoE layer's fused experts), not the model. KODA's weight initialisation runs
through ``Module.apply``, which zero.Init wraps to gather one module, initialise it and
partition it again (``koda.model.init.init_weights``), so the weights equal those of a model
built whole for the same seed.

AutoEP (DeepSpeed 0.19.8) takes such partitioned experts: in ``deepspeed.initialize`` it
gathers one MoE layer's ``gate_up_proj``/``down_proj`` at a time (``moe/ep_repack.py``),
keeps this rank's experts and partitions them over the expert-data-parallel group
(``runtime/engine.py``, ``_partition_autoep_zero3_experts``); the discarded source layer is
freed before the next one is gathered.

zero.Init patches ``torch.nn.Module`` subclasses and torch's tensor constructors process-wide
while it is open, and keeps module-level state (the open-context count, the outermost
context). What goes wrong when it is entered more than once, and what KODA does:

- A context opened while another is open joins the outer one (its dtype, its groups): a
  critic built inside the actor's construction would silently take the actor's settings.
  KODA opens one context per network and refuses to nest them (``KodaError``).
- With ``zero_optimization.memory_efficient_linear`` (on by default) DeepSpeed replaces
  ``torch.nn.functional.linear`` for the rest of the process, for every later network too.
  A whole-model ZeRO-3 build does the same inside ``deepspeed.initialize``, so this is not
  new; KODA leaves the setting to the config (the kwarg of ``zero.Init`` is overridden by it).
- A network built this way holds only partitions: it is usable only through its engine,
  so it goes to ``deepspeed.initialize`` straight away and is never used bare.

On CPU ranks the whole-module tensors live in host memory, and glibc's allocator keeps what
they free: after the first large ``free`` it raises its mmap threshold (up to 32 MiB), so
later module-sized buffers come from the heap, where each rank's small partitions, allocated
in between, pin the freed space. Measured on 2 ranks (a 448 MiB model): 386 and 541 MiB
resident after construction instead of its 224 MiB share. While building (construction and
AutoEP's per-layer gathers in ``deepspeed.initialize``), KODA fixes the mmap and trim
thresholds at glibc's default 128 KiB, so those buffers are mapped and unmapped; afterwards it
sets 32 MiB and 64 MiB, the values a process reaches by itself once it frees large buffers, so
training allocates as before. With it the same build peaks at 307 MiB per rank, whole-model
builds at 477-543 MiB (``tests/distributed/test_construct.py``).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
from collections.abc import Callable, Iterator

import torch

from koda.distributed.accelerator import on_cpu
from koda.distributed.ds_config import DeepSpeedPlan
from koda.errors import KodaError

_open: list[str] = []      # the network being constructed, while a context is open


@contextlib.contextmanager
def partitioned_construction(name: str, plan: DeepSpeedPlan) -> Iterator[None]:
    """Modules created in this block are partitioned as they are created (ZeRO-3 only)."""
    if plan.zero_stage != 3:
        yield
        return
    if _open:
        raise KodaError(f"building network {name!r} inside the construction of {_open[0]!r}: "
                        "build one network at a time")
    import deepspeed

    _open.append(name)
    try:
        with deepspeed.zero.Init(config_dict_or_path=plan.config):
            yield
    finally:
        _open.pop()


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


@contextlib.contextmanager
def host_buffers_returned() -> Iterator[None]:
    """On CPU ranks with glibc, freed whole-module buffers go back to the OS while this is open
    (module notes). Open it around construction *and* ``deepspeed.initialize``, where AutoEP
    gathers one MoE layer's experts at a time."""
    mallopt = getattr(ctypes.CDLL(ctypes.util.find_library("c")), "mallopt", None) if on_cpu() else None
    if mallopt is None:          # a GPU rank (modules are built on the device), or not glibc
        yield
        return
    mallopt(_M_MMAP_THRESHOLD, 128 * 1024)
    mallopt(_M_TRIM_THRESHOLD, 128 * 1024)
    try:
        yield
    finally:
        mallopt(_M_MMAP_THRESHOLD, 32 * 2**20)
        mallopt(_M_TRIM_THRESHOLD, 64 * 2**20)


def construct(name: str, factory: Callable[[], torch.nn.Module], plan: DeepSpeedPlan,
              full_build: bool = False) -> torch.nn.Module:
    """Call `factory` so that it builds a partitioned network (under ZeRO-3).

    `full_build` builds the whole network on every rank instead, the path KODA took before
    partitioned construction; it is kept as the baseline of ``tools/bench_construct.py``.
    """
    if full_build:
        return factory()
    with partitioned_construction(name, plan):
        return factory()
