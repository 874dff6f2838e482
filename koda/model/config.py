"""Model shape: one dataclass, named presets, validation at construction.

The layout follows Mixtral's naming on purpose (``model.layers.N.self_attn.q_proj``,
``model.layers.N.mlp.gate``, ``model.layers.N.mlp.experts.gate_up_proj``) so that DeepSpeed
AutoEP's detector recognises the MoE blocks and a converted checkpoint maps onto a Hugging
Face ``MixtralForCausalLM`` without renaming.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from koda.errors import ConfigError

ATTENTION_BACKENDS = ("sdpa", "flash", "auto", "favor")
# Routers the MoE block implements; only "topk" is what DeepSpeed AutoEP runs (see docs/routers.md).
ROUTERS = ("topk", "switch", "hash", "topk_gumbel")


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 4096
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int = 2          # grouped-query attention; n_heads must be a multiple
    ffn_hidden: int = 256        # per-expert SwiGLU width F
    n_experts: int = 4
    top_k: int = 2
    moe_every: int = 1           # layer i is MoE when (i + 1) % moe_every == 0; others dense SwiGLU
    dense_ffn_hidden: int = 512  # width of the dense SwiGLU layers (unused when moe_every == 1)
    max_seq_len: int = 256
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    init: str = "normal"         # "normal" (std init_std) or "orthogonal" (gain-scaled orthogonal)
    init_std: float = 0.02
    # Attention kernel (docs/attention.md): "sdpa", "flash" (flash-attn, CUDA), "auto" (flash
    # where it runs, else sdpa) or "favor" (Performer FAVOR+, linear in sequence length).
    attention: str = "sdpa"
    favor_features: int = 256    # FAVOR+ random features m per head (error falls as 1/sqrt(m))
    favor_redraw: int = 0        # redraw the features every this many optimizer steps; 0 = fixed
    favor_seed: int = 0          # the features are regenerated from this seed, never saved
    router: str = "topk"         # topk, switch, hash or topk_gumbel (koda.model.moe; docs/routers.md)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "ffn_hidden",
                     "n_experts", "top_k", "moe_every", "dense_ffn_hidden", "max_seq_len", "favor_features"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"model.{name} must be a positive integer, got {value!r}")
        if self.d_model % self.n_heads:
            raise ConfigError(f"model.n_heads {self.n_heads} does not divide model.d_model {self.d_model}")
        if self.head_dim % 2:
            raise ConfigError(f"model head_dim {self.head_dim} (d_model / n_heads) must be even for RoPE")
        if self.n_heads % self.n_kv_heads:
            raise ConfigError(f"model.n_kv_heads {self.n_kv_heads} does not divide model.n_heads {self.n_heads}")
        if self.top_k > self.n_experts:
            raise ConfigError(f"model.top_k {self.top_k} exceeds model.n_experts {self.n_experts}")
        if self.moe_every > self.n_layers:
            raise ConfigError(f"model.moe_every {self.moe_every} exceeds model.n_layers {self.n_layers}: "
                              "the model would have no MoE layer")
        if self.init not in ("normal", "orthogonal"):
            raise ConfigError(f"model.init must be 'normal' or 'orthogonal', got {self.init!r}")
        if self.router not in ROUTERS:
            raise ConfigError(f"model.router must be one of {', '.join(ROUTERS)}, got {self.router!r}")
        if self.router in ("switch", "hash") and self.top_k != 1:
            raise ConfigError(f"model.router {self.router!r} sends each token to one expert: set model.top_k 1 "
                              f"(got {self.top_k})")
        if not self.init_std > 0:
            raise ConfigError(f"model.init_std must be > 0, got {self.init_std!r}")
        if self.attention not in ATTENTION_BACKENDS:
            raise ConfigError(f"model.attention must be one of {', '.join(ATTENTION_BACKENDS)}, got {self.attention!r}")
        for name in ("favor_redraw", "favor_seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"model.{name} must be a non-negative integer, got {value!r}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def is_moe_layer(self, index: int) -> bool:
        return (index + 1) % self.moe_every == 0

    @property
    def is_mixtral_layout(self) -> bool:
        """Every layer MoE with top-2 routing: the shape Hugging Face's Mixtral can represent."""
        return self.moe_every == 1 and self.top_k == 2

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The fields as a dict; those in ``_WRITTEN_WHEN_SET`` only when they differ from their
        default, so a model that does not use a later option is described (in checkpoints, and
        in the resume checks that compare descriptions) exactly as before the option existed."""
        values = dataclasses.asdict(self)
        for name in _WRITTEN_WHEN_SET:
            if values[name] == _DEFAULTS[name]:
                del values[name]
        return values

    @classmethod
    def from_dict(cls, values: dict) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"model: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
        return cls(**values)


_WRITTEN_WHEN_SET = ("attention", "favor_features", "favor_redraw", "favor_seed", "router")
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(ModelConfig)}


# Named sizes. `smoke` trains a few hundred steps in minutes on 2 CPU cores; `small` is a
# single-GPU model (~120M total, ~40M active parameters); `large` is a cluster preset
# (~47B total / ~13B active, Mixtral-8x7B's shape with KODA's 32k code vocabulary),
# documented in the README and never run in CI.
PRESETS: dict[str, ModelConfig] = {
    "smoke": ModelConfig(),
    "small": ModelConfig(vocab_size=16384, d_model=512, n_layers=8, n_heads=8, n_kv_heads=4,
                         ffn_hidden=1024, n_experts=8, top_k=2, max_seq_len=1024),
    "large": ModelConfig(vocab_size=32768, d_model=4096, n_layers=32, n_heads=32, n_kv_heads=8,
                         ffn_hidden=14336, n_experts=8, top_k=2, max_seq_len=4096, rope_theta=1e6),
}


def preset(name: str) -> ModelConfig:
    if name not in PRESETS:
        raise ConfigError(f"model.preset {name!r} is not one of {', '.join(PRESETS)}")
    return PRESETS[name]
