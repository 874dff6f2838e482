"""Deterministic mode: what KODA sets so that the same seed and inputs give bit-identical
tokens on every run on the same machine.

Randomness is already contained: sampling draws only from per-prompt ``torch.Generator``s
(``koda.infer.sampling``), and greedy and contrastive search draw nothing. What remains is
floating-point reduction order, which must not vary between runs:

- ``torch.use_deterministic_algorithms(True)``: on GPUs the MoE block's ``index_add_``
  otherwise accumulates with atomics in a run-dependent order; any op without a
  deterministic kernel raises instead of silently varying.
- ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (if unset): required by cuBLAS for reproducible
  matmuls under the flag above; it must be set before the first cuBLAS call.
- float32 matmul precision ``highest`` (no TF32): not a source of run-to-run variation,
  but a process-wide switch someone else may flip, which would change the bits.
- a fixed intra-op thread count: CPU kernels split reductions by thread count.

Bits are not promised across machines, CPU/GPU models, thread counts, torch/MKL versions,
dtypes, or batch compositions (a prompt batched with others runs through different matmul
shapes than alone; tokens usually, but not always, agree). MKL may also pick different code
paths on different x86 CPUs; ``MKL_CBWR=COMPATIBLE`` in the environment before start-up
pins them, at some cost in speed.
"""

from __future__ import annotations

import os

import torch


def enable_determinism(threads: int | None = None) -> dict:
    """Switch the process into deterministic mode -> the settings now in force (for logs)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.set_float32_matmul_precision("highest")
    if threads is not None:
        torch.set_num_threads(threads)
    return {"deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "cublas_workspace_config": os.environ["CUBLAS_WORKSPACE_CONFIG"],
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "threads": torch.get_num_threads(),
            "mkl_cbwr": os.environ.get("MKL_CBWR")}
