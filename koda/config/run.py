"""The run config: typed sections loaded from YAML, validated before any rank starts.

A run config names a model (a preset plus overrides), a DeepSpeed JSON, the data and the
schedule. Each section is a frozen dataclass; unknown keys and impossible values raise one
``ConfigError`` line naming the field (``train.eval_every must be ...``). ``--set a.b=v``
overrides from the command line go through the same checks.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from koda.config.rl import RLConfig
from koda.errors import ConfigError
from koda.model.config import ModelConfig, preset
from koda.optim.config import OptimizerConfig

PRESET_DIR = Path(__file__).resolve().parents[1] / "configs"


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


@dataclass(frozen=True)
class DataConfig:
    sources: tuple[str, ...] = ("stdlib",)   # "stdlib", files or globs (.py/.txt/.jsonl/.parquet, save_to_disk dirs)
    text_column: str = "text"                # the document's field in .jsonl, Parquet and saved datasets
    max_corpus_mb: float | None = None       # stop reading sources after this much text
    tokenizer: str = "cache/tokenizer-stdlib-4096.model"   # trained on first use if missing
    tokenizer_corpus_mb: float = 8.0         # text the tokenizer is trained on (a prefix of the corpus)
    shards_dir: str = "cache/shards/stdlib-4096"           # built on first use if missing
    val_fraction: float = 0.02
    seq_len: int = 256
    # Where training windows start: "fixed", every seq_len tokens of the stream; "documents", at the
    # end-of-text token before each document, so a document shorter than seq_len is seen whole with
    # its start, as a prompt is at generation (task documents: the body's constants are in the prompt).
    windows: str = "fixed"

    def __post_init__(self) -> None:
        _check(isinstance(self.sources, tuple) and len(self.sources) > 0, "data.sources must be a non-empty list")
        _check(self.windows in ("fixed", "documents"),
               f"data.windows must be 'fixed' or 'documents', got {self.windows!r}")
        _check(0 < self.val_fraction < 0.5, f"data.val_fraction must be in (0, 0.5), got {self.val_fraction}")
        _check(isinstance(self.seq_len, int) and self.seq_len >= 8, f"data.seq_len must be an integer >= 8, "
               f"got {self.seq_len!r}")
        _check(self.max_corpus_mb is None or self.max_corpus_mb > 0, "data.max_corpus_mb must be > 0")
        _check(self.tokenizer_corpus_mb > 0, "data.tokenizer_corpus_mb must be > 0")
        _check(isinstance(self.text_column, str) and bool(self.text_column),
               f"data.text_column must be a non-empty string, got {self.text_column!r}")


@dataclass(frozen=True)
class ScheduleConfig:
    steps: int = 300                # optimizer steps
    seed: int = 1234
    log_every: int = 10
    eval_every: int = 50
    eval_batches: int = 8           # validation micro-batches per rank
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    # A step whose loss or gradient norm is not finite: "stop" ends the run with an error
    # naming the step (nothing is saved after it); "skip" drops its update (DeepSpeed does
    # not apply a non-finite gradient), counts it in train/skipped_steps and goes on.
    on_nonfinite: str = "stop"
    # Stop (saving a checkpoint) at the first step boundary after this many seconds of the
    # run's training steps (evaluation and saving not counted; kept across resumes); rank 0's
    # clock decides for all. None: train.steps alone ends the run.
    time_budget_s: float | None = None
    # How the transformer blocks get their gradient: "backprop", or "dfa" (direct feedback
    # alignment, docs/dfa.md): fixed random [D, D] feedback matrices drawn from dfa_seed with
    # entries N(0, dfa_scale^2 / D). dfa_align_every: steps between measurements of each block's
    # DFA-vs-backprop gradient cosine (two extra forward/backward passes; 0: never).
    feedback: str = "backprop"
    dfa_seed: int = 0
    dfa_scale: float = 1.0
    dfa_align_every: int = 50

    def __post_init__(self) -> None:
        _check(self.feedback in ("backprop", "dfa"), f"train.feedback must be backprop or dfa, got {self.feedback!r}")
        _check(isinstance(self.dfa_seed, int) and not isinstance(self.dfa_seed, bool) and self.dfa_seed >= 0,
               f"train.dfa_seed must be a non-negative integer, got {self.dfa_seed!r}")
        _check(isinstance(self.dfa_scale, int | float) and not isinstance(self.dfa_scale, bool)
               and math.isfinite(self.dfa_scale) and self.dfa_scale > 0,
               f"train.dfa_scale must be a finite number > 0, got {self.dfa_scale!r}")
        _check(isinstance(self.dfa_align_every, int) and not isinstance(self.dfa_align_every, bool)
               and self.dfa_align_every >= 0,
               f"train.dfa_align_every must be a non-negative integer (0: never), got {self.dfa_align_every!r}")
        _check(self.time_budget_s is None or (isinstance(self.time_budget_s, int | float)
                                              and not isinstance(self.time_budget_s, bool) and self.time_budget_s > 0),
               f"train.time_budget_s must be a positive number of seconds or null, got {self.time_budget_s!r}")
        for name in ("steps", "log_every", "eval_every", "eval_batches", "checkpoint_every", "keep_checkpoints"):
            value = getattr(self, name)
            _check(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
                   f"train.{name} must be a positive integer, got {value!r}")
        _check(self.on_nonfinite in ("stop", "skip"),
               f"train.on_nonfinite must be stop or skip, got {self.on_nonfinite!r}")


@dataclass(frozen=True)
class MoEConfig:
    aux_loss_weight: float = 0.01   # Switch-style balancing loss; 0 turns balancing off
    z_loss_weight: float = 0.0      # router z-loss (ST-MoE) keeping gate logits small

    def __post_init__(self) -> None:
        _check(self.aux_loss_weight >= 0, f"moe.aux_loss_weight must be >= 0, got {self.aux_loss_weight}")
        _check(self.z_loss_weight >= 0, f"moe.z_loss_weight must be >= 0, got {self.z_loss_weight}")


@dataclass(frozen=True)
class IsometryConfig:
    """Orthogonality penalty and singular-value diagnostics (docs/isometry.md)."""

    # loss += lambda_t * sum ||W^T W - I||_F^2 over the selected weights (each expert's slice
    # separately; the smaller Gram side, so a wide W is penalised through W W^T); 0: off
    ortho_lambda: float = 0.0
    ortho_warmup_steps: int = 0     # lambda_t rises linearly to ortho_lambda over this many steps
    # regexes searched in parameter names of the training engine's module (AutoEP layout:
    # experts are ``mlp.experts.w1/w2/w3``); only 2-D and 3-D weights are selected
    ortho_patterns: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    spectrum_every: int = 0         # log iso/<kind>/* singular-value statistics every N steps; 0: never
    spectrum_layers: int = 3        # decoder layers sampled for them (evenly spaced, first and last included)

    def __post_init__(self) -> None:
        lam = self.ortho_lambda
        _check(isinstance(lam, int | float) and not isinstance(lam, bool) and math.isfinite(lam) and lam >= 0,
               f"isometry.ortho_lambda must be a finite number >= 0, got {lam!r}")
        for name, low in (("ortho_warmup_steps", 0), ("spectrum_every", 0), ("spectrum_layers", 1)):
            value = getattr(self, name)
            _check(isinstance(value, int) and not isinstance(value, bool) and value >= low,
                   f"isometry.{name} must be an integer >= {low}, got {value!r}")
        _check(isinstance(self.ortho_patterns, tuple) and all(isinstance(p, str) and p for p in self.ortho_patterns),
               f"isometry.ortho_patterns must be a list of non-empty strings, got {self.ortho_patterns!r}")
        _check(lam == 0 or len(self.ortho_patterns) > 0,
               f"isometry.ortho_lambda {lam} needs at least one entry in isometry.ortho_patterns")
        for pattern in self.ortho_patterns:
            try:
                re.compile(pattern)
            except re.error as err:
                raise ConfigError(f"isometry.ortho_patterns: {pattern!r} is not a regular expression ({err})") from None


@dataclass(frozen=True)
class LoggingConfig:
    wandb_project: str = "koda"
    wandb_entity: str | None = None
    wandb_mode: str = "auto"        # auto: online when W&B credentials exist, else offline
    run_name: str | None = None
    peak_tflops: float | None = None   # per device, for MFU; None: measured at start-up
    progress_bar: bool = True

    def __post_init__(self) -> None:
        _check(self.wandb_mode in ("auto", "online", "offline", "disabled"),
               f"logging.wandb_mode must be auto, online, offline or disabled, got {self.wandb_mode!r}")


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig
    ds_config: str
    run_dir: str
    world_size: int = 2             # ranks `koda train` starts on this machine (ignored under a launcher)
    data: DataConfig = field(default_factory=DataConfig)
    train: ScheduleConfig = field(default_factory=ScheduleConfig)
    moe: MoEConfig = field(default_factory=MoEConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    rl: RLConfig = field(default_factory=RLConfig)   # read by the RL stage only
    isometry: IsometryConfig = field(default_factory=IsometryConfig)   # read by the pre-training loop
    # None: the DeepSpeed config's optimizer runs; a section: KODA's (koda.optim), K-FAC or AdamW
    optimizer: OptimizerConfig | None = None
    # the dotted keys the YAML and --set overrides named (``train.steps``, ``optimizer``): what
    # a stage that does not read a field refuses (``refuse_unread``); not part of to_dict
    explicit: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        _check(isinstance(self.world_size, int) and self.world_size >= 1,
               f"world_size must be a positive integer, got {self.world_size!r}")
        _check(self.data.seq_len <= self.model.max_seq_len,
               f"data.seq_len {self.data.seq_len} exceeds model.max_seq_len {self.model.max_seq_len}")

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out.pop("explicit")
        return out


# Fields one stage reads and the other does not (prefixes of dotted keys). A config naming one
# of them for the other stage is refused: silently ignoring it would run something else than asked.
STAGE_FIELDS = {
    "pretrain": ("isometry", "optimizer", "train.feedback", "train.dfa_seed", "train.dfa_scale",
                 "train.dfa_align_every", "train.eval_batches"),
    "rl": ("rl",),
}


def refuse_unread(cfg: RunConfig, stage: str) -> None:
    """One ConfigError line for the first field `cfg` sets that only another stage reads."""
    for key in sorted(cfg.explicit):
        for owner, prefixes in STAGE_FIELDS.items():
            if owner != stage and any(key == p or key.startswith(p + ".") for p in prefixes):
                raise ConfigError(f"{key} is read by --stage {owner} only; --stage {stage} would ignore it "
                                  "(remove it from the config)")


_SECTIONS = {"data": DataConfig, "train": ScheduleConfig, "moe": MoEConfig, "logging": LoggingConfig,
             "rl": RLConfig, "isometry": IsometryConfig}


def _section(cls, values, name: str):
    if values is None:
        return cls()
    _check(isinstance(values, dict), f"{name} must be a mapping, got {type(values).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            raise ConfigError(f"{name}: unknown key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    try:
        return cls(**values)
    except TypeError as err:
        raise ConfigError(f"{name}: {err}") from None


def _model(values) -> ModelConfig:
    values = dict(values or {})
    base = preset(values.pop("preset", "smoke"))
    if not values:
        return base
    return ModelConfig.from_dict({**base.to_dict(), **values})


def from_dict(raw: dict) -> RunConfig:
    _check(isinstance(raw, dict), "run config: the top level must be a mapping")
    known = {"model", "ds_config", "run_dir", "world_size", "optimizer", *_SECTIONS}
    for key in raw:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            raise ConfigError(f"run config: unknown key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    for key in ("ds_config", "run_dir"):
        _check(isinstance(raw.get(key), str), f"{key} must be given as a string")
    sections = {name: _section(cls, raw.get(name), name) for name, cls in _SECTIONS.items()}
    _check(raw.get("optimizer") is None or isinstance(raw["optimizer"], dict), "optimizer must be a mapping")
    optimizer = None if raw.get("optimizer") is None else OptimizerConfig.from_dict(raw["optimizer"])
    explicit = {f"{name}.{key}" if isinstance(value, dict) else name
                for name, value in raw.items() for key in (value if isinstance(value, dict) else [None])}
    return RunConfig(model=_model(raw.get("model")), ds_config=raw["ds_config"], run_dir=raw["run_dir"],
                     world_size=raw.get("world_size", 2), optimizer=optimizer, explicit=frozenset(explicit),
                     **sections)


def _apply_override(raw: dict, assignment: str) -> None:
    key, sep, text = assignment.partition("=")
    _check(bool(sep) and bool(key), f"--set expects key=value, got {assignment!r}")
    value = yaml.safe_load(text)
    node = raw
    *parents, leaf = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
        _check(isinstance(node, dict), f"--set {key}: {part} is not a section")
    node[leaf] = value


def load(name_or_path: str, overrides: list[str] = ()) -> RunConfig:
    """A preset name (``smoke``, ``small``, ``large``: koda/configs/*.yaml) or a YAML path."""
    path = Path(name_or_path)
    if not path.is_file():
        path = PRESET_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            presets = ", ".join(sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))
            raise ConfigError(f"config {name_or_path!r}: no such file and no such preset ({presets})")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config {path}: invalid YAML{where}") from None
    for assignment in overrides:
        _apply_override(raw, assignment)
    return from_dict(raw)
