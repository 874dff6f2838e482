"""MFU is taken against a peak that cannot be under-measured, so it never exceeds 100 %."""

import json

import torch

from koda.run import flops
from tests.helpers.tiny import TINY


def test_a_configured_peak_below_what_the_run_achieves_is_raised_not_exceeded(monkeypatch, tmp_path):
    monkeypatch.setenv("KODA_CACHE", str(tmp_path))
    meter = flops.Throughput(TINY, 64, torch.float32, peak_tflops=1e-9)     # 1 kFLOP/s: far too low
    first = meter.metrics(tokens=1000, seconds=1.0, steps=2)
    assert first["perf/mfu"] == 1.0 and first["perf/step_s"] == 0.5 and first["perf/tokens_per_s"] == 1000
    slower = meter.metrics(tokens=500, seconds=1.0, steps=1)
    assert abs(slower["perf/mfu"] - 0.5) < 1e-12                       # against the raised peak


def test_the_cpu_peak_is_measured_once_cached_and_only_ever_raised(monkeypatch, tmp_path):
    monkeypatch.setenv("KODA_CACHE", str(tmp_path))
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    calls = []
    monkeypatch.setattr(flops, "measure_matmul_peak", lambda *a, **k: calls.append(a) or 2e9)
    meter = flops.Throughput(TINY, 64, torch.float32)
    assert meter.peak == 2e9 and len(calls) == 1
    cache = json.loads(flops.peak_cache_path().read_text())
    assert list(cache.values()) == [2e9]
    again = flops.Throughput(TINY, 64, torch.float32)         # cached: no second measurement
    assert again.peak == 2e9 and len(calls) == 1
    achieved_tokens = 10 * 2e9 / again.flops_per_token       # a run ten times the measured peak
    assert again.metrics(tokens=achieved_tokens, seconds=1.0, steps=1)["perf/mfu"] <= 1.0
    assert list(json.loads(flops.peak_cache_path().read_text()).values())[0] >= 2e10 * 0.999
