"""Choose DeepSpeed's accelerator before DeepSpeed is imported.

DeepSpeed resolves its accelerator once, at import, and on a machine without a GPU its
auto-detection can still pick CUDA when a CUDA build of torch is installed. KODA sets
``DS_ACCELERATOR=cpu`` when no GPU is usable, unless the user already chose.
"""

from __future__ import annotations

import os


def configure_accelerator() -> str:
    if "DS_ACCELERATOR" not in os.environ:
        import torch

        os.environ["DS_ACCELERATOR"] = "cuda" if torch.cuda.is_available() else "cpu"
    return os.environ["DS_ACCELERATOR"]


def on_cpu() -> bool:
    return configure_accelerator() == "cpu"


def supports_bf16() -> bool:
    """bf16 arithmetic in hardware: a CUDA device with bf16, or a CPU with AVX512-BF16/AMX."""
    import torch

    if not on_cpu():
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        with open("/proc/cpuinfo") as info:
            flags = info.read()
    except OSError:
        return False
    return any(flag in flags for flag in (" avx512_bf16", " amx_bf16"))


def local_world_size() -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("LOCAL_SIZE", "1")))


def configure_cpu_threads() -> int:
    """Give each local rank its share of the cores: by default every rank's torch would
    start one thread per core and the ranks would fight over them."""
    import torch

    if not on_cpu():
        return torch.get_num_threads()
    threads = max(1, (os.cpu_count() or 1) // local_world_size())
    torch.set_num_threads(threads)
    return threads
