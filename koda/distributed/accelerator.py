"""Choose DeepSpeed's accelerator, and where its ops are built, before DeepSpeed is imported.

DeepSpeed resolves its accelerator once, at import, and on a machine without a GPU its
auto-detection can still pick CUDA when a CUDA build of torch is installed. KODA sets
``DS_ACCELERATOR=cpu`` when no GPU is usable, unless the user already chose.

DeepSpeed compiles its ops on first use (torch cpp extensions). On the CPU that is the
shared-memory all-reduce, built when a process group starts: about two minutes of silence on
the first run. torch builds into one folder per user (``~/.cache/torch_extensions``), so two
installations on one machine (two checkouts, two venvs) rebuild over each other's build at
every switch. KODA points ``TORCH_EXTENSIONS_DIR`` at a folder of this installation instead,
unless the user set it; ranks inherit it from the process that starts them, which also says
when the build is about to happen (``announce_op_build``).
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

# The op DeepSpeed builds on the CPU (deepspeed/comm/torch.py: build_shm_op), and the file a
# finished build leaves: <TORCH_EXTENSIONS_DIR>/<name>/<name>.so
CPU_OP = "deepspeed_shm_comm"


def configure_accelerator() -> str:
    """Set DS_ACCELERATOR and TORCH_EXTENSIONS_DIR (each only when unset); returns the accelerator.

    Called by the process that starts the ranks and by every rank, before DeepSpeed is imported.
    """
    if "DS_ACCELERATOR" not in os.environ:
        import torch

        os.environ["DS_ACCELERATOR"] = "cuda" if torch.cuda.is_available() else "cpu"
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(extensions_dir(os.environ["DS_ACCELERATOR"])))
    return os.environ["DS_ACCELERATOR"]


def extensions_dir(accelerator: str) -> Path:
    """This installation's build folder: inside the virtual environment (removed with it), or
    outside one, a per-user cache folder keyed by the interpreter's prefix. Python version and
    accelerator name it, as torch's default folder does (an op of one name differs per build)."""
    tag = f"py{sys.version_info.major}{sys.version_info.minor}_{accelerator}"
    if sys.prefix != sys.base_prefix:
        return Path(sys.prefix) / "torch_extensions" / tag
    key = hashlib.sha256(os.path.realpath(sys.prefix).encode()).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "koda" / "torch_extensions" / f"{key}-{tag}"


def cpu_op_built(directory: Path) -> bool:
    return (directory / CPU_OP / f"{CPU_OP}.so").is_file()


def announce_op_build() -> bool:
    """Configure (for the ranks about to start) and say, in one line, when their first process
    group will compile the CPU op; True when it did. For the process that starts local ranks
    (``local_launch.run``), so the line comes after the config checks, never before an error."""
    if configure_accelerator() != "cpu":
        return False
    directory = Path(os.environ["TORCH_EXTENSIONS_DIR"])
    if cpu_op_built(directory):
        return False
    print(f"koda: building DeepSpeed's CPU ops once into {directory} (about 2 minutes; later runs reuse them)",
          file=sys.stderr, flush=True)
    return True


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
