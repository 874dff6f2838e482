"""Process-group facts and the few collectives the trainer's metrics need."""

from __future__ import annotations

import contextlib
import os
import warnings

import torch


def init() -> None:
    """Join the process group the launcher described (env:// rendezvous)."""
    import deepspeed

    # DeepSpeed 0.19.8 calls torch's deprecated *_into_tensor/*_tensor collectives on every
    # ZeRO-3 gather; torch warns each time, which buries the training log.
    warnings.filterwarnings("ignore", message=r".*(all_gather_into_tensor|reduce_scatter_tensor).*deprecated",
                            category=FutureWarning)

    from koda.distributed.accelerator import on_cpu

    deepspeed.init_distributed(dist_backend="gloo" if on_cpu() else "nccl")


def shutdown() -> None:
    """Leave the process group together: every rank past its last collective, then the group
    destroyed, so no backend thread is still running when the interpreter exits (left to exit
    teardown, gloo's threads have aborted a finished rank: "terminate called without an active
    exception")."""
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def leave() -> None:
    """End a rank whose work is done and written: the group left together (``shutdown``), the
    Python exit handlers run (sandbox pools, W&B), the output flushed, then exit 0 without the
    interpreter's teardown, whose C++ destructors have aborted finished ranks on the CPU backend
    now and then ("terminate called without an active exception", exit -6): the launcher would
    report a run that had succeeded as failed and stop its other ranks."""
    import atexit
    import sys

    shutdown()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_initialized() else int(os.environ.get("RANK", 0))


def world_size() -> int:
    if torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return int(os.environ.get("WORLD_SIZE", 1))


def barrier() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum a small CPU tensor over all ranks (metrics; gloo handles CPU tensors everywhere).

    On NCCL the tensor travels through the current device and comes back to the CPU."""
    if not torch.distributed.is_initialized():
        return values
    device = "cpu" if torch.distributed.get_backend() == "gloo" else torch.device("cuda", torch.cuda.current_device())
    out = values.detach().to(device, torch.float64).clone()
    torch.distributed.all_reduce(out)
    return out.cpu()


def all_gather_object(obj) -> list:
    """Every rank's `obj`, in rank order (small picklable values only)."""
    if not torch.distributed.is_initialized():
        return [obj]
    out = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


def broadcast_object(obj, src: int = 0):
    if not torch.distributed.is_initialized():
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=src)
    return box[0]


def expert_groups(param) -> tuple | None:
    """(expert-data-parallel group, expert-parallel size, expert-parallel group) of an AutoEP
    expert parameter, from the group name DeepSpeed tags it with; None for a dense parameter."""
    name = getattr(param, "ds_zero_partition_group_name", None)
    if name is None:
        return None
    from deepspeed.utils import groups

    return (groups._get_expert_data_parallel_group(name), groups._get_expert_parallel_world_size(name),
            groups._get_expert_parallel_group(name))


def remove_shm_buffers(master_addr: str, master_port: int) -> None:
    """Delete the shared-memory all-reduce buffers DeepSpeed's CPU backend leaves in /dev/shm.

    Each run creates one ~70 MB ``deepspeed_allreduce_buffer_*_<addr>_<port>_<rank>`` file per
    rank and never unlinks it, so repeated runs (or killed ones) slowly fill RAM-backed
    /dev/shm. Called by the launching process once its ranks have exited.
    """
    import glob

    for path in glob.glob(f"/dev/shm/deepspeed_allreduce_buffer_*_{master_addr}_{master_port}_*"):
        with contextlib.suppress(OSError):
            os.unlink(path)


def merge_moments(counts: torch.Tensor, means: torch.Tensor, m2s: torch.Tensor, total=None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The (count, mean, M2) of several parts' data together: Chan et al.'s pairwise merge
    summed over the parts, in two sums.

    counts: [P], means and m2s: [P, *S] (M2 = sum of squared deviations from the part's
    mean). n = sum n_i; mean = sum n_i mean_i / n; M2 = sum (M2_i + n_i (mean_i - mean)^2),
    the last term being the spread *between* the parts. Centering on the global mean before
    summing avoids the cancellation of the sum-of-squares form. ``total`` maps [P, M] to the
    [M] sum over all parts: ``sum(0)`` when every part is here (the default), an all-reduce
    of a rank's one part in ``all_reduce_moments``. Returns float64 ([], [*S], [*S]).
    """
    total = total or (lambda x: x.sum(0))
    parts, shape = counts.shape[0], means.shape[1:]
    n_i = counts.double().reshape(parts, 1)                          # [P, 1]
    mu_i = means.double().reshape(parts, -1)                         # [P, K], K = prod(S)
    first = total(torch.cat([n_i, n_i * mu_i], dim=1))               # [1 + K]
    n = first[0]
    global_mean = first[1:] / n if n > 0 else torch.zeros_like(first[1:])
    total_m2 = total(m2s.double().reshape(parts, -1) + n_i * (mu_i - global_mean) ** 2)  # [K]
    return n, global_mean.reshape(shape), total_m2.reshape(shape)


def all_reduce_moments(count: torch.Tensor, mean: torch.Tensor, m2: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Merge per-rank (count, mean, M2) into the statistics of all ranks' data together.

    count: [] (samples seen by this rank), mean and m2: [K] or [] (M2 = sum of squared
    deviations from the mean). ``merge_moments`` with this rank as the one local part and
    two float64 all-reduces as its sums. Returns float64 tensors of the input shapes;
    without a process group the triple comes back unchanged.
    """
    if not torch.distributed.is_initialized():
        return count, mean, m2
    n, global_mean, total_m2 = merge_moments(count.reshape(1), mean.unsqueeze(0), m2.unsqueeze(0),
                                             total=lambda x: all_reduce_sum(x[0]))
    return n.reshape(count.shape), global_mean, total_m2
