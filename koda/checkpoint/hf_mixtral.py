"""KODA <-> Hugging Face ``MixtralForCausalLM``: config fields (tensor names: ``koda.naming``).

The export uses the Mixtral checkpoint layout that the Hub's Mixtral repositories, vLLM and
SGLang read, and that ``transformers`` 5.x itself writes from ``save_pretrained`` (its
default ``save_original_format=True`` reverts the in-memory fused experts): per expert
``model.layers.N.block_sparse_moe.experts.{e}.w1/w3.weight`` [F, D] (gate, up) and
``.w2.weight`` [D, F], router ``model.layers.N.block_sparse_moe.gate.weight`` [E, D].
transformers 4.x loads these names directly; 5.x fuses them on load
(``conversion_mapping.py``, "mixtral"). Attention, norms, embeddings and the head already
share Mixtral's names (``koda.model.config``), and KODA's RoPE uses the same half-split
convention, so no weight is permuted.

Only a model whose every layer is MoE with top-2 routing (``ModelConfig.is_mixtral_layout``)
can be written: Mixtral has no dense layers and a fixed ``num_experts_per_tok``.
"""

from __future__ import annotations

import torch

from koda.data.tokenizer import BOS, EOS, PAD
from koda.errors import KodaError
from koda.model.config import ModelConfig

DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


def check_exportable(cfg: ModelConfig) -> None:
    if not cfg.is_mixtral_layout:
        raise KodaError(f"--format hf-mixtral needs every layer MoE with top-2 routing (Mixtral's layout); "
                        f"this model has moe_every={cfg.moe_every}, top_k={cfg.top_k}: use --format koda")
    if cfg.attention == "favor":
        raise KodaError("--format hf-mixtral cannot carry model.attention favor (Mixtral computes softmax "
                        "attention): use --format koda")


def hf_config(cfg: ModelConfig, dtype: torch.dtype) -> dict:
    """A ``config.json`` for ``MixtralForCausalLM``. Both ``rope_theta`` (transformers 4.x)
    and ``rope_parameters`` (5.x) are written so either version reads the right base."""
    check_exportable(cfg)
    return {
        "architectures": ["MixtralForCausalLM"], "model_type": "mixtral",
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.d_model, "intermediate_size": cfg.ffn_hidden,
        "num_hidden_layers": cfg.n_layers, "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads, "head_dim": cfg.head_dim, "hidden_act": "silu",
        "max_position_embeddings": cfg.max_seq_len, "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta, "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "num_local_experts": cfg.n_experts, "num_experts_per_tok": cfg.top_k,
        "router_jitter_noise": 0.0, "router_aux_loss_coef": 0.0, "output_router_logits": False,
        "sliding_window": None, "attention_dropout": 0.0, "tie_word_embeddings": False,
        "initializer_range": cfg.init_std, "use_cache": True,
        "bos_token_id": BOS, "eos_token_id": EOS, "pad_token_id": PAD, "dtype": DTYPE_NAMES[dtype],
    }


def model_config_from_hf(hf: dict) -> ModelConfig:
    """The KODA config of a Mixtral ``config.json`` (for loading an exported directory back)."""
    try:
        rope = hf.get("rope_parameters") or {}
        cfg = ModelConfig(vocab_size=hf["vocab_size"], d_model=hf["hidden_size"], n_layers=hf["num_hidden_layers"],
                          n_heads=hf["num_attention_heads"], n_kv_heads=hf["num_key_value_heads"],
                          ffn_hidden=hf["intermediate_size"], n_experts=hf["num_local_experts"],
                          top_k=hf["num_experts_per_tok"], moe_every=1, max_seq_len=hf["max_position_embeddings"],
                          rope_theta=float(rope.get("rope_theta", hf.get("rope_theta", 1e6))),
                          norm_eps=hf["rms_norm_eps"], init_std=hf.get("initializer_range", 0.02))
    except KeyError as err:
        raise KodaError(f"Mixtral config.json: missing field {err.args[0]!r}") from None
    if hf.get("head_dim") not in (None, cfg.head_dim):
        raise KodaError(f"Mixtral config.json: head_dim {hf['head_dim']} != hidden_size / num_attention_heads")
    return cfg
