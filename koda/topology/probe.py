"""A rendezvous probe to launch in place of the trainer: ``koda launch --probe --topology FILE``.

Every rank joins the process group (gloo on CPU, NCCL on GPU), all-gathers which node it runs on,
and rank 0 prints the rank -> node table. It exits non-zero if a rank's node is not the hostfile
line that should hold it (node = rank // slots), i.e. if the placement was not realised; a cluster
can be checked this way in seconds before a long job. DeepSpeed's launcher passes
``--local_rank`` and sets RANK, WORLD_SIZE, MASTER_ADDR/PORT, CROSS_RANK (node) and LOCAL_SIZE.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from datetime import timedelta


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m koda.topology.probe")
    p.add_argument("--local_rank", type=int, default=0)
    p.parse_known_args(argv)
    import torch
    import torch.distributed as dist

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend, timeout=timedelta(seconds=120))
    rank, world = dist.get_rank(), dist.get_world_size()
    node, slots = int(os.environ.get("CROSS_RANK", "0")), int(os.environ.get("LOCAL_SIZE", "1"))
    mine = torch.tensor([rank, node, int(os.environ.get("LOCAL_RANK", "0"))], dtype=torch.int64)
    rows = [torch.zeros(3, dtype=torch.int64) for _ in range(world)]
    dist.all_gather(rows, mine)
    bad = [r.tolist() for r in rows if int(r[1]) != int(r[0]) // slots]
    if rank == 0:
        host = socket.gethostname()
        print(f"probe: world size {world}, backend {backend}, {slots} slot(s) per node, on {host}")
        for r, node_k, local in (row.tolist() for row in rows):
            print(f"probe: rank {r} on node {node_k} (hostfile line {node_k}), local rank {local}")
        print("probe: placement realised" if not bad else f"probe: MISMATCH rank/node/local {bad}")
    dist.barrier()
    dist.destroy_process_group()
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
