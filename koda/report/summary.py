"""The numbers a report leads with: config highlights and headline results of one run.

Each row is (label, text) so that the HTML page can lay several runs side by side, one
column per run, with a row missing from a run shown as a dash. Values come from the files
the trainer writes (``config.json``: the run config; ``ds_config.json``: the DeepSpeed
config after "auto" was resolved), so a row reflects what ran, not what a YAML file said.
"""

from __future__ import annotations

import statistics

from koda.report.runs import Run

Rows = list[tuple[str, str]]


def _count(n: float) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.0f}"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def parameter_counts(model: dict) -> tuple[int, int] | None:
    """(total, active matmul parameters per token) of a model config, or None if it does not load.

    The total comes from building the model on the meta device, so it stays exact as the
    model changes and costs no memory even for the 47B preset; a config from another KODA
    version that no longer validates simply loses this row.
    """
    try:
        import torch

        from koda.model.config import ModelConfig
        from koda.model.transformer import KodaForCausalLM
        from koda.run.flops import active_matmul_params

        cfg = ModelConfig.from_dict(model)
        with torch.device("meta"):
            total = sum(p.numel() for p in KodaForCausalLM(cfg).parameters())
        return total, active_matmul_params(cfg)
    except Exception:   # any failure only drops one row of the summary
        return None


def _preset_name(model: dict) -> str:
    try:
        from koda.model.config import PRESETS
    except Exception:   # the summary loses one word, the report survives
        return "?"
    for name, cfg in PRESETS.items():
        if cfg.to_dict() == model:
            return name
    return "custom"


def model_rows(config: dict) -> Rows:
    model = config.get("model")
    if not isinstance(model, dict):
        return []
    rows = []
    shape = (f"{model.get('n_layers')} layers, d_model {model.get('d_model')}, "
             f"{model.get('n_experts')} experts top-{model.get('top_k')}")
    rows.append(("model", f"{_preset_name(model)} ({shape})"))
    counts = parameter_counts(model)
    if counts:
        rows.append(("parameters", f"{_count(counts[0])} total, {_count(counts[1])} active matmul per token"))
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    if "seq_len" in data:
        rows.append(("sequence length", str(data["seq_len"])))
    return rows


def _world_size(config: dict | None, ds: dict) -> int | None:
    """Ranks that ran: the resolved batch identity (global = micro x accumulation x ranks)
    holds under any launcher, while config.world_size counts only local ranks."""
    try:
        return int(ds["train_batch_size"]) // (int(ds["train_micro_batch_size_per_gpu"])
                                               * int(ds["gradient_accumulation_steps"]))
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return (config or {}).get("world_size")


def deepspeed_rows(config: dict | None, ds: dict) -> Rows:
    rows: Rows = []
    world = _world_size(config, ds)
    if world is not None:
        rows.append(("world size", str(world)))
    zero = ds.get("zero_optimization") or {}
    if zero:
        offload = [f"{what} to {zero[key].get('device')}" for key, what in
                   (("offload_optimizer", "optimizer"), ("offload_param", "parameters"))
                   if isinstance(zero.get(key), dict) and zero[key].get("device") not in (None, "none")]
        rows.append(("ZeRO", f"stage {zero.get('stage', 0)}" + (f", offload {', '.join(offload)}" if offload else "")))
    ep = ds.get("expert_parallel") or {}
    rows.append(("expert parallel", f"AutoEP size {ep.get('autoep_size', 1)}" if ep.get("enabled") else "off"))
    precision = next((p for p in ("bf16", "fp16") if (ds.get(p) or {}).get("enabled")), "fp32")
    rows.append(("precision", precision))
    if "train_batch_size" in ds:
        micro, accumulation = ds.get("train_micro_batch_size_per_gpu"), ds.get("gradient_accumulation_steps")
        rows.append(("global batch", f"{ds['train_batch_size']} sequences (micro {micro} x accumulation "
                     f"{accumulation} x {world} ranks)"))
    opt = ds.get("optimizer") or {}
    if opt:
        params = opt.get("params") or {}
        rows.append(("optimizer", f"{opt.get('type')} lr {params.get('lr')}, weight decay "
                     f"{params.get('weight_decay', 0)}, clip {ds.get('gradient_clipping', 'none')}"))
    sched = ds.get("scheduler") or {}
    if sched:
        params = sched.get("params") or {}
        rows.append(("lr schedule", f"{sched.get('type')}, warmup {params.get('warmup_num_steps', 0)} "
                     f"of {params.get('total_num_steps', '?')} steps"))
    return rows


def result_rows(run: Run) -> Rows:
    s = run.scalars
    rows: Rows = []
    last_step = max(series.steps[-1] for series in s.values()) if s else 0
    train = (run.config or {}).get("train")
    planned = train.get("steps") if isinstance(train, dict) else None
    rows.append(("steps logged", f"{last_step}" + (f" of {planned}" if planned else "")))
    if run.times is not None and len(run.times.steps) > 1:
        rows.append(("wall time (first to last log)", _duration(run.times.values[-1] - run.times.values[0])))
    for key, label in (("train/loss", "final train loss"), ("val/loss", "final val loss")):
        if key in s:
            step, value = s[key].last
            rows.append((label, f"{value:.4f} (step {step})"))
    if "val/loss" in s:
        step, value = s["val/loss"].best()
        rows.append(("best val loss", f"{value:.4f} (step {step})"))
    if "perf/tokens_per_s" in s:
        rows.append(("tokens/s (median)", f"{statistics.median(s['perf/tokens_per_s'].values):,.0f}"))
    if "perf/mfu" in s:
        rows.append(("MFU (median)", f"{statistics.median(s['perf/mfu'].values):.1%}"))
    peaks = [max(series.values) for key, series in s.items() if key.startswith("mem/") and "peak" in key]
    if peaks:
        rows.append(("peak memory (rank 0)", f"{max(peaks):.2f} GB"))
    if "moe/load_max_min" in s:
        rows.append(("expert load max/min (last, worst layer)", f"{s['moe/load_max_min'].last[1]:.2f}"))
    return rows


def _guarded(rows_of, run: Run, file: str, *args) -> Rows:
    """A hand-edited or foreign config with odd types costs its highlights, not the report."""
    try:
        return rows_of(*args)
    except (AttributeError, TypeError, ValueError, KeyError) as err:
        run.warnings.append(f"{file} has an unexpected layout ({type(err).__name__}): its highlights are left out")
        return []


def summarize(run: Run) -> Rows:
    """Config highlights then results; the config rows are absent when the files are."""
    rows = _guarded(model_rows, run, "config.json", run.config) if run.config else []
    if run.ds_config:
        rows += _guarded(deepspeed_rows, run, "ds_config.json", run.config, run.ds_config)
    return rows + result_rows(run)
