"""Rank jobs for the checkpoint tests (run through tests.helpers.ranks.run_ranks)."""

from __future__ import annotations

import functools


def engine_logits(config_path: str, tag: str, inputs_path: str, out_path: str) -> dict:
    """Build the actor engine as the trainer does, load checkpoint `tag` of the run, and
    save the engine's evaluation logits on fixed inputs (rank 0 writes them)."""
    import torch

    from koda.config import run as run_config
    from koda.distributed import checkpoint, comm, ds_config
    from koda.distributed.engine import build_engine
    from koda.model import KodaForCausalLM

    cfg = run_config.load(config_path)
    resolved = ds_config.resolve(ds_config.load(cfg.ds_config), model=cfg.model, world_size=comm.world_size(),
                                 train_steps=cfg.train.steps, bf16_supported=False)
    torch.manual_seed(cfg.train.seed)
    engine = build_engine("actor", functools.partial(KodaForCausalLM, cfg.model), resolved)
    client = checkpoint.load({"actor": engine}, f"{cfg.run_dir}/checkpoints", tag).client_state
    engine.eval()
    with torch.no_grad():
        logits = engine(torch.load(inputs_path))                  # [B, S, V], every rank runs it (ZeRO-3)
    if comm.rank() == 0:
        torch.save(logits.float().clone(), out_path)
    return {"step": client["koda"]["step"], "dtype": str(logits.dtype)}


def train_then_save_format1(config_path: str, run_dir: str, steps: int) -> dict:
    """Train `steps` steps as ``koda train`` does, then save the way KODA did before format 2
    (the code of that version, kept here as the reference writer of the old layout): the
    actor's DeepSpeed files directly in ``<tag>/``, ``koda_rank<R>.pt``, and a ``COMPLETE``
    with sizes only."""
    import json
    import os
    from pathlib import Path

    import torch

    from koda import __version__
    from koda.config import run as run_config
    from koda.distributed import checkpoint, comm
    from koda.pretrain.stage import build

    cfg = run_config.load(config_path, [f"run_dir={run_dir}"])
    trainer = build(cfg)
    if comm.rank() == 0:                            # what run_stage writes beside the checkpoints
        trainer.layout.config.write_text(json.dumps(cfg.to_dict(), indent=1))
    trainer.evaluate()                              # what the loop does before step 1 (no state changes)
    for step in range(steps):
        trainer.train_step(step)
    state = {"koda": {"step": trainer.step, "loader": trainer.loader.state_dict(), "world_size": trainer.world,
                      "model": cfg.model.to_dict(), "tokens": trainer.step * trainer.tokens_per_step,
                      "format": 1, "koda_version": __version__}}
    directory = Path(run_dir) / "checkpoints"
    tag = checkpoint.tag_for(trainer.step)
    target = directory / tag
    trainer.engine.ds.save_checkpoint(str(directory), tag=tag, client_state=state, save_latest=False)
    torch.save({"rng": checkpoint.rng_state()}, target / f"koda_rank{comm.rank()}.pt")
    comm.barrier()
    if comm.rank() == 0:
        files = {str(p.relative_to(target)): p.stat().st_size for p in sorted(target.rglob("*")) if p.is_file()}
        (target / "COMPLETE").write_text(json.dumps({"step": trainer.step, "world_size": comm.world_size(),
                                                     "files": files}, indent=1))
        (directory / "latest").write_text(tag)
    comm.barrier()
    return {"tag": tag, "pid": os.getpid()}


def save_and_load_two_engines(config_path: str, out_dir: str) -> dict:
    """An actor (ZeRO-3 + AutoEP) and a small critic (ZeRO-3) plus a replicated tracker in one
    checkpoint: trained one step, saved, trained further, loaded back; then one rank's file
    of the critic is altered (same size) and loaded again."""
    from pathlib import Path

    import torch

    from koda.config import run as run_config
    from koda.distributed import checkpoint, comm, ds_config
    from koda.distributed.engine import build_engine
    from koda.errors import KodaError
    from koda.model import KodaForCausalLM

    cfg = run_config.load(config_path)
    actor_cfg = ds_config.resolve(ds_config.load(cfg.ds_config), model=cfg.model, world_size=comm.world_size(),
                                  train_steps=cfg.train.steps, bf16_supported=False)
    raw = ds_config.load(cfg.ds_config)
    raw.pop("expert_parallel")
    critic_cfg = ds_config.resolve(raw, model=cfg.model, world_size=comm.world_size(), train_steps=cfg.train.steps,
                                   bf16_supported=False)
    torch.manual_seed(cfg.train.seed)

    def critic() -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Embedding(cfg.model.vocab_size, 16), torch.nn.Linear(16, 1))

    engines = {"actor": build_engine("actor", functools.partial(KodaForCausalLM, cfg.model), actor_cfg),
               "critic": build_engine("critic", critic, critic_cfg)}
    inputs = torch.randint(0, cfg.model.vocab_size, (2, 16), generator=torch.Generator().manual_seed(3))  # [B, S]

    def train_step():
        for engine in engines.values():
            engine.train()
            engine.backward(engine(inputs).float().pow(2).mean())
            engine.step()

    @torch.no_grad()
    def outputs():
        for engine in engines.values():
            engine.eval()
        return {name: engine(inputs).float().clone() for name, engine in engines.items()}

    train_step()                        # the warmup's first step has learning rate 0
    train_step()
    before = outputs()
    tracker = {"mean": torch.tensor(1.5), "count": 7}
    directory = Path(out_dir) / "checkpoints"
    saved = checkpoint.save(engines, directory, 1, {"koda": {"step": 1}}, {"rank": comm.rank()}, keep=2,
                            extra_state={"reward_tracker": tracker})
    train_step()
    moved = outputs()
    loaded = checkpoint.load(engines, directory, saved.tag)
    after = outputs()

    victim = directory / saved.tag / "critic" / "zero_pp_rank_1_mp_rank_00_optim_states.pt"
    if comm.rank() == 0:
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0x01
        victim.write_bytes(bytes(data))
    comm.barrier()
    try:
        checkpoint.load(engines, directory, saved.tag)
        error = None
    except KodaError as err:
        error = str(err)
    return {"tag": saved.tag, "lr": {name: engine.lr() for name, engine in engines.items()},
            "moved": {name: not torch.equal(moved[name], before[name]) for name in engines},
            "restored": {name: torch.equal(after[name], before[name]) for name in engines},
            "client": loaded.client_state["koda"], "rank_state": loaded.rank_state,
            "tracker": {"mean": float(loaded.extra_state["reward_tracker"]["mean"]),
                        "count": loaded.extra_state["reward_tracker"]["count"]},
            "error": error}
