#!/usr/bin/env python
"""What the content digests in ``COMPLETE`` cost, against writing the same bytes.

In one run, on this machine, for a checkpoint-like file (``torch.save`` of fp32 tensors):
  (a) torch.save of the file (what the save itself does), fsync'd,
  (b) reading it back (the floor of any digest),
  (c) ``koda.distributed.checkpoint.file_digest`` (sha256, streamed),
  (d) the same with blake2b (the other candidate; sha256 wins where the CPU has SHA
      instructions),
and prints each time and the ratios (c)/(a), (c)/(b) and (d)/(c). A save splits the digests over the
ranks, so with W ranks on one filesystem the added time is about (c)/W of the bytes per rank.
The file is freshly written, so (b) and (c) read from the page cache, as they do right
after a save.

    python tools/bench_checkpoint_digest.py --mb 256 --repeats 3
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from pathlib import Path

import torch

from koda.distributed.checkpoint import file_digest


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mb", type=int, default=256, help="size of the file in MB")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    state = {"fp32_flat_groups": [torch.randn(args.mb * 2**20 // 4 // 2) for _ in range(2)]}   # 2 x [N/2]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "optim_states.pt"

        def save():
            torch.save(state, path)
            with open(path, "rb+") as f:
                os.fsync(f.fileno())

        def read():
            with open(path, "rb") as f:
                while f.read(1 << 20):
                    pass

        t_save = _best(save, args.repeats)
        t_read = _best(read, args.repeats)
        t_digest = _best(lambda: file_digest(path), args.repeats)

        def blake2b():
            with open(path, "rb") as f:
                hashlib.file_digest(f, "blake2b").hexdigest()

        t_blake = _best(blake2b, args.repeats)
        size = path.stat().st_size / 1e6
    print(f"file {size:,.0f} MB (best of {args.repeats})")
    print(f"  (a) torch.save + fsync  {t_save:7.3f} s  {size / t_save:8,.0f} MB/s")
    print(f"  (b) read back           {t_read:7.3f} s  {size / t_read:8,.0f} MB/s")
    print(f"  (c) sha256 digest      {t_digest:7.3f} s  {size / t_digest:8,.0f} MB/s")
    print(f"  (d) blake2b digest      {t_blake:7.3f} s  {size / t_blake:8,.0f} MB/s")
    print(f"  digest / save {t_digest / t_save:.2f}x, digest / read {t_digest / t_read:.2f}x, "
          f"blake2b / sha256 {t_blake / t_digest:.2f}x")


if __name__ == "__main__":
    main()
