"""Model FLOPs per token, the peak that MFU is taken against, and a stage's throughput metrics."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import time
from pathlib import Path

import torch

from koda.model.config import ModelConfig


def active_matmul_params(cfg: ModelConfig) -> int:
    """Parameters one token multiplies through (embedding lookups excluded, top-k experts only)."""
    d, hd = cfg.d_model, cfg.head_dim
    attention = d * hd * (2 * cfg.n_heads + 2 * cfg.n_kv_heads)
    moe = cfg.n_experts * d + cfg.top_k * 3 * d * cfg.ffn_hidden
    dense = 3 * d * cfg.dense_ffn_hidden
    ffn = sum(moe if cfg.is_moe_layer(i) else dense for i in range(cfg.n_layers))
    return cfg.n_layers * attention + ffn + d * cfg.vocab_size


def train_flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """6·N_active for the matmuls (forward 2, backward 4) plus 12·L·S·D for the attention
    scores and weighted values (PaLM, Chowdhery et al. 2022, appendix B; no causal discount)."""
    return 6.0 * active_matmul_params(cfg) + 12.0 * cfg.n_layers * seq_len * cfg.d_model


def measure_matmul_peak(dtype: torch.dtype, device: str | torch.device = "cpu", size: int = 2048,
                        seconds: float = 1.0) -> float:
    """Sustained FLOP/s of a square matmul in `dtype` on `device` (all threads torch uses)."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    for _ in range(2):
        a @ b
    sync()
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        runs += 1
        sync()
    return 2.0 * size**3 * runs / (time.perf_counter() - start)


# Dense bf16 tensor-core peaks per device from the vendors' datasheets (FLOP/s), matched on the name.
BF16_DATASHEET = (("H200", 989.4e12), ("H100 PCIe", 756.0e12), ("H100", 989.4e12), ("A100", 312.0e12),
                  ("L40S", 362.0e12), ("A10", 125.0e12))


def peak_cache_path() -> Path:
    return Path(os.environ.get("KODA_CACHE", Path.home() / ".cache" / "koda")) / "peak_flops.json"


def _cpu_key(dtype: torch.dtype) -> str:
    model = "cpu"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        model = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "cpu")
    return f"{model}|{os.cpu_count()} cores|{dtype}"


class Throughput:
    """perf/tokens_per_s, perf/step_s and perf/mfu of a stage's steps.

    MFU is achieved model FLOP/s per device over a peak that cannot be under-measured:
    ``logging.peak_tflops`` when given; on a known GPU in bf16 its datasheet figure; otherwise
    the highest matmul rate ever seen on this machine for the dtype and core count, kept in
    ``peak_flops.json`` under ``$KODA_CACHE`` (``~/.cache/koda``), measured once with every core
    when missing and raised whenever a run itself achieves more. So MFU never exceeds 100 %.
    On CPU ranks share one machine's cores: the device count is machines, not ranks.
    """

    def __init__(self, model: ModelConfig, seq_len: int, dtype: torch.dtype, peak_tflops: float | None = None):
        from koda.distributed import comm
        from koda.distributed.accelerator import local_world_size, on_cpu

        self.flops_per_token = train_flops_per_token(model, seq_len)
        self.cpu, self.key = on_cpu(), None
        world = comm.world_size()
        self.devices = max(1, world // local_world_size()) if self.cpu else world
        if peak_tflops:
            self.peak = peak_tflops * 1e12
        elif not self.cpu:
            name = torch.cuda.get_device_name()
            sheet = next((v for k, v in BF16_DATASHEET if k in name), None) if dtype == torch.bfloat16 else None
            self.peak = sheet or measure_matmul_peak(dtype, torch.device("cuda", torch.cuda.current_device()), 4096)
        else:
            self.key = _cpu_key(dtype)
            cached = torch.tensor([_read_cache().get(self.key, 0.0)])
            if comm.all_reduce_sum(cached)[0] == 0:         # rank 0 measures while the others wait
                if comm.rank() == 0:
                    threads = torch.get_num_threads()
                    torch.set_num_threads(max(1, os.cpu_count() or 1))
                    cached[0] = measure_matmul_peak(dtype, "cpu", 1024, 1.0)
                    torch.set_num_threads(threads)
                    _raise_cache(self.key, float(cached[0]))
                cached = comm.all_reduce_sum(cached)
            self.peak = float(cached[0])

    def metrics(self, tokens: int, seconds: float, steps: int) -> dict[str, float]:
        tokens_per_s = tokens / seconds
        achieved = tokens_per_s * self.flops_per_token / self.devices
        if achieved > self.peak:        # the peak was set or measured too low: raise it (and the cache)
            self.peak = achieved
            from koda.distributed import comm

            if self.key is not None and comm.rank() == 0:
                _raise_cache(self.key, achieved)
        return {"perf/tokens_per_s": tokens_per_s, "perf/step_s": seconds / steps,
                "perf/mfu": achieved / self.peak}


def _read_cache() -> dict:
    try:
        data = json.loads(peak_cache_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _raise_cache(key: str, flops: float) -> None:
    """Keep the highest figure seen (written atomically: ranks of other runs may read it)."""
    data = _read_cache()
    if flops <= data.get(key, 0.0):
        return
    data[key] = flops
    path = peak_cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def memory_metrics() -> dict[str, float]:
    """This rank's memory: peak GPU allocation, or resident and peak resident set on a CPU."""
    from koda.distributed.accelerator import on_cpu

    if not on_cpu():
        return {"mem/gpu_peak_gb": torch.cuda.max_memory_allocated() / 2**30}
    with open("/proc/self/statm") as statm:
        rss = int(statm.read().split()[1]) * resource.getpagesize()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024     # ru_maxrss is in KiB
    return {"mem/rss_gb": rss / 2**30, "mem/peak_rss_gb": peak / 2**30}
