"""Load a DeepSpeed JSON config and reconcile it with the model and the world.

The JSON in ``ds_configs/`` owns what DeepSpeed owns (batch sizes, optimizer, schedule,
precision, ZeRO, expert parallelism). KODA fills what follows from the model instead of
asking the user to keep two files in sync (the AutoEP naming contract, top-k, the schedule
length) and resolves the values it documents as ``"auto"``. Every inconsistency is one
``ConfigError`` line naming the field, raised in the launching process before any rank starts.

``resolve`` returns a ``DeepSpeedPlan``: the dict DeepSpeed receives plus the few facts KODA
reads back from it (batch layout, expert-parallel size, precision, world), computed once.
"""

from __future__ import annotations

import copy
import difflib
import json
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from koda.errors import ConfigError
from koda.model.config import ModelConfig
from koda.naming import AUTOEP_NAMING

REPO_DS_CONFIGS = Path(__file__).resolve().parents[2] / "ds_configs"

# DeepSpeed ignores top-level keys it does not know, so a typo ("zero_optimisation") would
# silently train without ZeRO. These are the top-level sections this DeepSpeed reads.
KNOWN_TOP_LEVEL = {
    "train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "optimizer",
    "scheduler", "gradient_clipping", "prescale_gradients", "gradient_predivide_factor", "bf16", "fp16",
    "amp", "zero_optimization", "zero_allow_untested_optimizer", "zero_force_ds_cpu_optimizer",
    "expert_parallel", "tensor_parallel", "activation_checkpointing", "steps_per_print",
    "wall_clock_breakdown", "dump_state", "flops_profiler", "tensorboard", "wandb", "csv_monitor",
    "comet", "comms_logger", "communication_data_type", "seq_parallel_communication_data_type",
    "data_types", "checkpoint", "aio", "compile", "memory_breakdown", "sparse_gradients",
    "disable_allgather", "elasticity", "pipeline", "torch_autocast", "data_efficiency",
    "curriculum_learning", "use_data_before_expert_parallel", "timers", "graph_harvesting",
    "autotuning", "weight_quantization", "compression_training", "nebula", "hybrid_engine",
    "dataloader_drop_last", "sequence_parallel_size", "zenflow", "mixed_precision",
    "managed_gradient_accumulation",
}


_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass(frozen=True)
class DeepSpeedPlan:
    """A resolved DeepSpeed config for one network on one world.

    ``config`` is what ``deepspeed.initialize`` and ``zero.Init`` receive (treat it as read-only);
    the other fields are derived from it once by ``resolve`` so no caller reads dict keys back.
    """

    config: dict = field(repr=False)
    world: int
    micro_batch: int     # sequences per rank per micro-batch
    grad_accum: int      # micro-batches per optimizer step
    ep_size: int         # AutoEP expert-parallel size, 1 when AutoEP is off
    precision: str       # "bf16", "fp16" or "fp32": the dtype ZeRO keeps the weights in
    zero_stage: int

    @property
    def dtype(self) -> torch.dtype:
        return _DTYPES[self.precision]

    @property
    def global_batch(self) -> int:
        """Sequences per optimizer step over all ranks (DeepSpeed's train_batch_size)."""
        return self.micro_batch * self.grad_accum * self.world

    def with_config(self, **sections) -> DeepSpeedPlan:
        """The plan with top-level sections of the config replaced (e.g. ``checkpoint``);
        only for sections none of the derived fields come from."""
        derived = {"train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "train_batch_size",
                   "expert_parallel", "bf16", "fp16", "zero_optimization"}
        if derived & set(sections):
            raise ConfigError(f"DeepSpeedPlan.with_config: {sorted(derived & set(sections))[0]!r} is derived; "
                              "resolve the config again instead")
        return replace(self, config={**self.config, **sections})


def expert_parallel_size(config: dict) -> int:
    """AutoEP's expert-parallel size in a resolved (or saved) DeepSpeed config; 1 when off."""
    ep = config.get("expert_parallel") or {}
    return int(ep.get("autoep_size", 1)) if ep.get("enabled") else 1


def precision(config: dict) -> str:
    if (config.get("bf16") or {}).get("enabled"):
        return "bf16"
    if (config.get("fp16") or {}).get("enabled"):
        return "fp16"
    return "fp32"


def resolve_path(name: str | Path) -> Path:
    """A path as given, else a file of that name in the repository's ``ds_configs/``."""
    path = Path(name)
    if path.is_file():
        return path
    candidate = REPO_DS_CONFIGS / path.name
    if candidate.is_file() and path.parent == Path("."):
        return candidate
    raise ConfigError(f"ds_config: {str(name)!r} is neither a file nor a config in {REPO_DS_CONFIGS}")


def load(name: str | Path) -> dict:
    path = resolve_path(name)
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        where = f"line {err.lineno} column {err.colno}"
        raise ConfigError(f"ds_config {path}: invalid JSON at {where}: {err.msg}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"ds_config {path}: the top level must be a JSON object")
    return config


def _positive_int(config: dict, key: str, default: int | None = None) -> int:
    value = config.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"ds_config.{key} must be a positive integer, got {value!r}")
    return value


def resolve(config: dict, *, model: ModelConfig, world_size: int, train_steps: int,
            bf16_supported: bool) -> DeepSpeedPlan:
    """Check a copy of `config` against the model and `world_size`, fill KODA's derived
    fields, and return it as a plan. Raises ConfigError naming the first problem."""
    cfg = copy.deepcopy(config)
    unknown = sorted(set(cfg) - KNOWN_TOP_LEVEL)
    if unknown:
        close = difflib.get_close_matches(unknown[0], KNOWN_TOP_LEVEL, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"ds_config: unknown key {unknown[0]!r}{hint}")
    micro = _positive_int(cfg, "train_micro_batch_size_per_gpu")
    accum = _positive_int(cfg, "gradient_accumulation_steps", 1)
    cfg["gradient_accumulation_steps"] = accum
    expected = micro * accum * world_size
    if cfg.setdefault("train_batch_size", expected) != expected:
        raise ConfigError(f"ds_config.train_batch_size {cfg['train_batch_size']} != train_micro_batch_size_per_gpu "
                          f"{micro} x gradient_accumulation_steps {accum} x world size {world_size}")
    _resolve_precision(cfg, bf16_supported)
    _resolve_expert_parallel(cfg, model, world_size)
    _resolve_schedule(cfg, train_steps)
    _check_with_deepspeed(cfg)
    return DeepSpeedPlan(config=cfg, world=world_size, micro_batch=micro, grad_accum=accum,
                         ep_size=expert_parallel_size(cfg), precision=precision(cfg),
                         zero_stage=int((cfg.get("zero_optimization") or {}).get("stage", 0)))


def _resolve_precision(cfg: dict, bf16_supported: bool) -> None:
    bf16 = cfg.get("bf16", {})
    if bf16.get("enabled") == "auto":
        bf16["enabled"] = bf16_supported
    if bf16.get("enabled") and cfg.get("fp16", {}).get("enabled"):
        raise ConfigError("ds_config: bf16.enabled and fp16.enabled are both true")


def _resolve_expert_parallel(cfg: dict, model: ModelConfig, world_size: int) -> None:
    ep = cfg.get("expert_parallel")
    if not ep or not ep.get("enabled", False):
        return
    if model.router != "topk":
        raise ConfigError(f"ds_config.expert_parallel.enabled is true, but model.router is {model.router!r}: "
                          "AutoEP routes with its own top-k; use a ds_config with expert parallelism off "
                          "(ds_configs/zero3_smoke.json)")
    if ep.get("load_balance_coeff") is not None:
        raise ConfigError("ds_config.expert_parallel.load_balance_coeff is refused by this DeepSpeed's AutoEP; "
                          "KODA balances experts itself: set moe.aux_loss_weight in the run config")
    size = ep.get("autoep_size", 1)
    if size == "auto":
        size = math.gcd(world_size, model.n_experts)
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ConfigError(f"ds_config.expert_parallel.autoep_size must be a positive integer or 'auto', got {size!r}")
    if world_size % size:
        raise ConfigError(f"ds_config.expert_parallel.autoep_size {size} does not divide world size {world_size}")
    if model.n_experts % size:
        raise ConfigError(f"ds_config.expert_parallel.autoep_size {size} does not divide model.n_experts "
                          f"{model.n_experts}")
    ep["autoep_size"] = size
    for key, value in {**AUTOEP_NAMING, "top_k": model.top_k}.items():
        if ep.setdefault(key, value) != value:
            raise ConfigError(f"ds_config.expert_parallel.{key} is {ep[key]!r}, but KODA's model needs {value!r} "
                              "(leave it out and KODA fills it)")
    if not re.fullmatch(ep["moe_layer_pattern"], "model.layers.0.mlp"):
        raise ConfigError("ds_config.expert_parallel.moe_layer_pattern does not match KODA's MoE blocks")


def _resolve_schedule(cfg: dict, train_steps: int) -> None:
    params = cfg.get("scheduler", {}).get("params", {})
    for key in ("total_num_steps",):
        if key in params or cfg.get("scheduler", {}).get("type") in ("WarmupCosineLR", "WarmupDecayLR"):
            value = params.setdefault(key, "auto")
            if value == "auto":
                params[key] = train_steps
            elif value != train_steps:
                raise ConfigError(f"ds_config.scheduler.params.{key} {value} != train.steps {train_steps} "
                                  "(set it to \"auto\")")
    warmup = params.get("warmup_num_steps")
    if isinstance(warmup, int) and warmup >= train_steps:
        raise ConfigError(f"ds_config.scheduler.params.warmup_num_steps {warmup} >= train.steps {train_steps}")


def _check_with_deepspeed(cfg: dict) -> None:
    """DeepSpeed's own validation of every section (pydantic, extra keys forbidden), run
    here so a bad section fails in the launcher process, not in every rank at once."""
    from deepspeed.runtime.config import DeepSpeedConfig

    probe = copy.deepcopy(cfg)
    probe.pop("train_batch_size")   # DeepSpeed derives it from whatever world it sees (1 before launch)
    try:
        DeepSpeedConfig(probe)
    except Exception as err:  # DeepSpeed raises ValueError, AssertionError or pydantic errors
        first = " ".join(str(err).split())[:300]
        raise ConfigError(f"ds_config rejected by DeepSpeed: {first}") from None


# Scheduler parameters that set an absolute learning rate. With KODA's optimizer the run
# config's optimizer.lr is the peak; one of these disagreeing with it would override it unseen.
_SCHEDULER_ABSOLUTE_LR = ("warmup_max_lr", "cycle_max_lr")


def with_client_optimizer(plan: DeepSpeedPlan, lr: float) -> DeepSpeedPlan:
    """The plan for a run whose optimizer KODA builds (the run config's ``optimizer`` section).

    Handed a client optimizer, DeepSpeed ignores the config's ``optimizer`` section without a
    word (``optimizer_name`` becomes the client's class name), so it is dropped here rather than
    left to look in effect; ZeRO refuses an optimizer class it does not know unless
    ``zero_allow_untested_optimizer`` is set. The config's ``scheduler`` keeps working: DeepSpeed
    builds it on the client optimizer's groups, whose ``lr`` (``optimizer.lr``) it scales.
    Settings that contradict this are one ConfigError line.
    """
    cfg = copy.deepcopy(plan.config)
    if cfg.get("zero_allow_untested_optimizer", True) is not True:
        raise ConfigError("ds_config.zero_allow_untested_optimizer is false, but the run config's optimizer "
                          "section needs it (leave it out and KODA sets it)")
    offload = (cfg.get("zero_optimization") or {}).get("offload_optimizer") or {}
    if offload.get("device", "none") != "none" and cfg.get("zero_force_ds_cpu_optimizer", True):
        raise ConfigError("ds_config.zero_optimization.offload_optimizer: DeepSpeed refuses KODA's optimizer "
                          "under ZeRO-Offload unless zero_force_ds_cpu_optimizer is false")
    params = (cfg.get("scheduler") or {}).get("params") or {}
    for key in _SCHEDULER_ABSOLUTE_LR:
        if key in params and params[key] != lr:
            raise ConfigError(f"ds_config.scheduler.params.{key} {params[key]} != optimizer.lr {lr} "
                              "(leave it out: the schedule then peaks at optimizer.lr)")
    cfg.pop("optimizer", None)
    cfg["zero_allow_untested_optimizer"] = True
    return replace(plan, config=cfg)
