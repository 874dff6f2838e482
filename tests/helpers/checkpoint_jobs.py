"""Rank jobs for the checkpoint tests (run through tests.helpers.ranks.run_ranks)."""

from __future__ import annotations


def engine_logits(config_path: str, tag: str, inputs_path: str, out_path: str) -> dict:
    """Build the actor engine as the trainer does, load checkpoint `tag` of the run, and
    save the engine's evaluation logits on fixed inputs (rank 0 writes them)."""
    import functools

    import torch

    from koda.distributed import checkpoint, comm, ds_config
    from koda.distributed.engine import build_engine
    from koda.model import KodaForCausalLM
    from koda.train import config as run_config

    cfg = run_config.load(config_path)
    resolved = ds_config.resolve(ds_config.load(cfg.ds_config), model=cfg.model, world_size=comm.world_size(),
                                 train_steps=cfg.train.steps, bf16_supported=False)
    torch.manual_seed(cfg.train.seed)
    engine = build_engine("actor", functools.partial(KodaForCausalLM, cfg.model), resolved)
    client, _ = checkpoint.load(engine, f"{cfg.run_dir}/checkpoints", tag)
    engine.eval()
    with torch.no_grad():
        logits = engine(torch.load(inputs_path))                  # [B, S, V], every rank runs it (ZeRO-3)
    if comm.rank() == 0:
        torch.save(logits.float().clone(), out_path)
    return {"step": client["koda"]["step"], "dtype": str(logits.dtype)}
