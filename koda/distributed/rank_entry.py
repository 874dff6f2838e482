"""One rank of ``koda.distributed.local_launch.run_ranks``: call the job, write its result.

    python -m koda.distributed.rank_entry package.module:function '<kwargs JSON>' OUT_DIR

It joins the process group and nothing more (no stop handlers, thread sizing or log
levels): a job that needs the full training start calls ``rank_start.start_rank`` itself,
and tests compare ranks against plain single-process runs that have none of it.
"""

import importlib
import json
import sys
from pathlib import Path

if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--local_rank")]
    target, job_args, out_dir = args[0], json.loads(args[1]), Path(args[2])
    module, func = target.split(":")
    from koda.distributed import comm
    from koda.distributed.accelerator import configure_accelerator

    configure_accelerator()
    comm.init()
    result = getattr(importlib.import_module(module), func)(**job_args)
    (out_dir / f"rank{comm.rank()}.json").write_text(json.dumps(result))
    comm.leave()                                  # the result is on disk
