"""Functions run inside real DeepSpeed ranks by tests (see tests.helpers.ranks)."""

from __future__ import annotations


def autoep_structure(config_path: str) -> dict:
    """Build the actor engine exactly as the trainer does and describe what DeepSpeed made."""
    import functools

    import torch

    from koda.config import run as run_config
    from koda.distributed import comm, ds_config
    from koda.distributed.engine import build_engine
    from koda.model import KodaForCausalLM

    cfg = run_config.load(config_path)
    resolved = ds_config.resolve(ds_config.load(cfg.ds_config), model=cfg.model, world_size=comm.world_size(),
                                 train_steps=cfg.train.steps, bf16_supported=False)
    torch.manual_seed(0)
    reference = KodaForCausalLM(cfg.model)
    torch.manual_seed(0)
    engine = build_engine("actor", functools.partial(KodaForCausalLM, cfg.model), resolved)
    layer = engine.module.model.layers[0].mlp
    # which experts this rank holds: match its local w1 slices against the full model's gate halves
    full_gate = reference.model.layers[0].mlp.experts.gate_up_proj[:, : cfg.model.ffn_hidden]   # [E, F, D]
    from deepspeed.utils import safe_get_full_fp32_param

    local_w1 = safe_get_full_fp32_param(layer.experts.w1)                                         # [E/ep, F, D]
    held = [e for e in range(cfg.model.n_experts)
            if any(torch.allclose(full_gate[e], w, atol=1e-6) for w in local_w1)]
    # KODA's load counts (RouterProbe, from the gate logits) against what AutoEP routed
    # (its own tokens_per_expert buffer), on a batch that differs per rank.
    from koda.run.router_probe import RouterProbe

    probe = RouterProbe(engine.module, cfg.model.top_k)
    layers = [engine.module.model.layers[i].mlp for i in probe.layers]
    for moe in layers:
        moe.tokens_per_expert.zero_()
    batch = torch.randint(0, cfg.model.vocab_size, (2, 64), generator=torch.Generator().manual_seed(comm.rank()))
    with torch.no_grad():
        engine(batch)                                                     # [2, 64] -> [2, 64, V]
    probe.losses()
    counts = probe.take_counts()
    return {"layer_type": type(layer).__name__, "local_experts": int(local_w1.shape[0]), "held": held,
            "ep_size": int(layer.ep_size), "rank": comm.rank(),
            "probe_counts": [counts[i].tolist() for i in probe.layers],
            "autoep_counts": [[int(v) for v in moe.tokens_per_expert.tolist()] for moe in layers]}
