"""Decoder-only MoE transformer. Pure PyTorch: DeepSpeed is applied from outside
(``koda.distributed.engine``), and nothing here knows about ranks or partitions."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from koda.model.attention import Attention, build_attention_mask
from koda.model.config import ModelConfig
from koda.model.favor import FavorCache
from koda.model.init import init_weights
from koda.model.kv_cache import KVCache
from koda.model.moe import DenseMLP, MoEBlock
from koda.model.norm import RMSNorm
from koda.model.rope import rope_angles


class DecoderLayer(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then + mlp(norm(x))."""

    def __init__(self, cfg: ModelConfig, index: int):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.self_attn = Attention(cfg, index)
        self.post_attention_layernorm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = MoEBlock(cfg) if cfg.is_moe_layer(index) else DenseMLP(cfg.d_model, cfg.dense_ffn_hidden)
        self.index = index

    def forward(self, x, cos, sin, mask=None, cache=None):
        """x: [B, S, D] -> [B, S, D]."""
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, self.index)
        return x + self.mlp(self.post_attention_layernorm(x))


class KodaModel(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)


class KodaForCausalLM(nn.Module):
    """Token ids [B, S] -> next-token logits [B, S, V].

    Parameter names mirror Mixtral's (``model.layers.N...``, ``lm_head``) so AutoEP's
    detector finds the MoE blocks and converted checkpoints need no renaming.
    The config is stored as ``cfg``, not ``config``: AutoEP treats a ``config`` attribute
    as a Hugging Face config and would try to match its presets against it.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.model = KodaModel(cfg)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        init_weights(self, cfg)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                cache: KVCache | None = None, position_ids: torch.Tensor | None = None,
                return_hidden: bool = False):
        """input_ids: [B, S]; attention_mask: [B, T] bool/int, True for real tokens, covering the
        cached tokens too (T = cached + S), needed only with left padding; position_ids: [B, S],
        default counts from the cache length (or from the first real token when padded).

        attention_mask may instead be a full [B, 1, S, T] bool pattern (True = attend), used
        as given, with explicit position_ids: contrastive search scores k alternative next
        tokens as k queries at one position that see the context and themselves only.

        Returns logits [B, S, V], or (logits, hidden [B, S, D]) with return_hidden, where
        hidden is the final normalised state (what contrastive search compares).
        """
        hidden = self.hidden_states(input_ids, attention_mask, cache, position_ids)
        logits = self.lm_head(hidden)
        return (logits, hidden) if return_hidden else logits

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                      cache: KVCache | None = None, position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Same arguments as ``forward`` -> final normalised hidden states [B, S, D], no logits.

        Decoding needs logits for few of the positions it runs (the last prompt token; the
        chosen one of contrastive search's k candidates) and applies ``lm_head`` to those
        alone: the [D, V] projection is the largest matmul of a small model's decode step.
        """
        B, S = input_ids.shape
        past = cache.length if cache is not None else 0
        if attention_mask is not None and attention_mask.dim() == 4:
            if position_ids is None:
                raise ValueError("a [B, 1, S, T] attention_mask needs explicit position_ids")
            mask = attention_mask
        else:
            mask = build_attention_mask(attention_mask, S, past)
        if position_ids is None:
            if attention_mask is not None:
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, past:past + S]
            else:
                position_ids = torch.arange(past, past + S, device=input_ids.device).expand(B, S)
        cos, sin = rope_angles(position_ids, self.cfg.head_dim, self.cfg.rope_theta)
        x = self.model.embed_tokens(input_ids)
        with self._token_ids_for_hash_routing(input_ids):
            for layer in self.model.layers:
                x = layer(x, cos, sin, mask, cache)
        if cache is not None:
            cache.advance(S)
        return self.model.norm(x)

    @contextlib.contextmanager
    def _token_ids_for_hash_routing(self, input_ids: torch.Tensor):
        """Hash-routed blocks pick experts from the token ids [B, S]; they are set on the blocks
        for this forward only, so neither the layers' nor the blocks' signatures change (an
        AutoEP layer, which replaces a block, is called with the hidden states alone)."""
        hashed = self.cfg.router == "hash"
        blocks = [layer.mlp for layer in self.model.layers
                  if hashed and isinstance(layer.mlp, MoEBlock) and layer.mlp.router == "hash"]
        for block in blocks:
            block.token_ids = input_ids
        try:
            yield
        finally:
            for block in blocks:
                block.token_ids = None

    def new_cache(self, batch: int, capacity: int) -> KVCache | FavorCache:
        """A decoding cache: keys/values, or FAVOR+'s running sums (constant size per layer)."""
        ref = self.lm_head.weight
        if self.cfg.attention == "favor":
            return FavorCache(self.cfg.n_layers, batch, self.cfg.n_kv_heads, self.cfg.favor_features,
                              self.cfg.head_dim, capacity, ref.device)
        return KVCache(self.cfg.n_layers, batch, self.cfg.n_kv_heads, self.cfg.head_dim, capacity,
                       ref.dtype, ref.device)

