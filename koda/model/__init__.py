"""The MoE decoder-only transformer: pure PyTorch, no distribution (see koda.distributed)."""

from koda.model.config import PRESETS, ModelConfig, preset
from koda.model.critic import KodaCritic
from koda.model.encoder import EncoderConfig, KodaEncoder
from koda.model.kv_cache import KVCache
from koda.model.transformer import KodaForCausalLM

__all__ = ["PRESETS", "EncoderConfig", "KVCache", "KodaCritic", "KodaEncoder", "KodaForCausalLM", "ModelConfig",
           "preset"]
