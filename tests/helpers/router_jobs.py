"""Rank jobs for the router tests (run through tests.helpers.ranks.run_ranks)."""

from __future__ import annotations


def train_and_describe(config_path: str) -> dict:
    """Train with the real pre-training stage, then describe the MoE block ZeRO-3 left on this rank."""
    from koda.config import run as run_config
    from koda.pretrain.stage import build
    from koda.run.start import run_stage

    cfg = run_config.load(config_path)
    trainer = build(cfg)
    run_stage(trainer, cfg, trainer.layout, trainer.resumed, trainer.plan.config, trainer.summary())
    block = trainer.engine.module.model.layers[0].mlp
    experts = block.experts.gate_up_proj                       # [E, 2F, D] in full
    return {"layer_type": type(block).__name__, "has_gate": hasattr(block, "gate"), "ep_size": trainer.plan.ep_size,
            "full_numel": int(experts.ds_numel), "local_numel": int(experts.ds_tensor.numel())}
