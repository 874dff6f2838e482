"""One training variant of a sweep: ``koda train`` with overrides, read back as a report Run.

The comparison tools (balancing loss on/off, DFA against backprop, routers, MoE against
dense, RL objectives) each train a config a few times with different ``--set`` overrides and
compare the metrics. Going through ``koda train`` in a subprocess keeps every variant on the
real path (its own launcher, ranks and process group, which one process cannot host twice),
and reading the result with ``koda.report.runs.load_run`` gives every tool the same
forgiving metrics reader instead of a JSON loop each.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from koda.errors import KodaError
from koda.report.runs import Run, load_run

# A sweep has no one watching its runs: no W&B runs, no progress bars in the tool's output.
QUIET = ("logging.wandb_mode=disabled", "logging.progress_bar=false")


class VariantFailed(KodaError):
    """``koda train`` exited non-zero; ``output`` is what it printed when it was captured."""

    def __init__(self, run_dir: Path, returncode: int, output: str | None):
        super().__init__(f"koda train of {run_dir} failed (exit {returncode})")
        self.returncode, self.output = returncode, output or ""


def train_command(config: str, run_dir: str | Path, overrides: Sequence[str] = (), stage: str = "pretrain",
                  steps: int | None = None, init_from: str | Path | None = None, extra_args: Sequence[str] = (),
                  quiet: bool = True) -> list[str]:
    """The ``python -m koda train`` argv of one variant. Overrides apply in order after
    ``QUIET`` (when `quiet`), so a caller's own ``logging.*`` setting wins."""
    sets = [*(QUIET if quiet else ()), *overrides]
    return [sys.executable, "-m", "koda", "train", "--stage", stage, "--config", str(config),
            "--run-dir", str(run_dir), *(["--steps", str(steps)] if steps is not None else []),
            *(["--init-from", str(init_from)] if init_from is not None else []),
            *(x for kv in sets for x in ("--set", kv)), *extra_args]


def run_variant(config: str, run_dir: str | Path, overrides: Sequence[str] = (), stage: str = "pretrain",
                steps: int | None = None, init_from: str | Path | None = None, extra_args: Sequence[str] = (),
                env: dict | None = None, capture: bool = False, quiet: bool = True) -> Run:
    """Train one variant into `run_dir` and return its metrics (``load_run``).

    `env` adds to this process's environment. The run's stdout (a line per logged step) is
    dropped; its stderr reaches the terminal unless `capture`, which keeps both for the
    VariantFailed raised when the run fails."""
    run_dir = Path(run_dir)
    cmd = train_command(config, run_dir, overrides, stage, steps, init_from, extra_args, quiet)
    done = subprocess.run(cmd, env={**os.environ, **(env or {})}, text=True,
                          stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                          stderr=subprocess.STDOUT if capture else None)
    if done.returncode:
        raise VariantFailed(run_dir, done.returncode, done.stdout)
    return load_run(run_dir)


def run_jobs(jobs: list[tuple[str, list[str], Path]], parallel: int, threads: int, on_success=None) -> None:
    """Run (name, argv, log file) jobs, `parallel` at a time, each with `threads` torch
    threads, its output in its log; `on_success(name)` after each that exits 0. Variants
    trained side by side share the machine's minutes (a load that slows one slows all); the
    first failure stops the others and raises."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    waiting, running = list(jobs), []
    while waiting or running:
        while waiting and len(running) < parallel:
            name, cmd, log = waiting.pop(0)
            print(f"[{time.strftime('%H:%M:%S')}] start {name}: {' '.join(cmd[2:])}", flush=True)
            log.parent.mkdir(parents=True, exist_ok=True)
            with log.open("w") as out:       # the child keeps its own copy of the descriptor
                running.append((name, log, subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)))
        time.sleep(2)
        for job in [j for j in running if j[2].poll() is not None]:
            running.remove(job)
            name, log, proc = job
            print(f"[{time.strftime('%H:%M:%S')}] done {name} (exit {proc.returncode})", flush=True)
            if not proc.returncode and on_success is not None:
                on_success(name)
            if proc.returncode:
                for j in running:
                    j[2].terminate()
                raise KodaError(f"{name} failed (exit {proc.returncode}); its output: {log}")
