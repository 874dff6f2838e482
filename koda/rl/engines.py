"""The RL stage's networks as DeepSpeed engines: actor, critic, encoder, frozen reference.

    plans = rl_plans(actor_ds, model_cfg, world_size, steps, rl)
    engines = build_rl_engines(model_cfg, plans, rl, seed=0, initial=weights_or_None)

One ``build_engine`` call per network, never nested. The actor keeps its DeepSpeed config
(ZeRO-3 + AutoEP); the critic and encoder come from their own configs (``rl.critic_ds_config``,
``rl.encoder_ds_config``). The reference policy, built only when ``rl.kl_coef > 0``, is
the actor's architecture and starting weights under the actor's ZeRO-3 / AutoEP config with
the optimizer and scheduler removed: an inference engine whose forward is a collective like
the others', and whose weights never change (it is rebuilt, not checkpointed: see
``koda.rl.stage``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

import torch

from koda.config.rl import RLConfig
from koda.distributed import ds_config
from koda.distributed.ds_config import DeepSpeedPlan
from koda.distributed.engine import Engine, build_engine
from koda.errors import KodaError
from koda.model import KodaForCausalLM
from koda.model.config import ModelConfig
from koda.model.init import load_weights

TRAINED = ("actor", "critic", "encoder")      # the engines with optimizers, in checkpoint order


@dataclass
class RLEngines:
    actor: Engine
    critic: Engine | None        # None when the advantages need no critic (grpo / rloo, or lrl 0)
    encoder: Engine | None       # None when rl.lvw is 0
    reference: Engine | None = None   # None when rl.kl_coef is 0

    def items(self) -> dict[str, Engine]:
        """The trained engines that exist, by name (what ``koda.distributed.checkpoint.save`` takes)."""
        return {n: getattr(self, n) for n in TRAINED if getattr(self, n) is not None}


def inference_plan(plan: DeepSpeedPlan) -> DeepSpeedPlan:
    """`plan` without optimizer and scheduler: DeepSpeed then keeps ZeRO-3's partitioning and
    AutoEP but allocates no optimizer state."""
    config = {k: v for k, v in plan.config.items() if k not in ("optimizer", "scheduler")}
    return replace(plan, config=config)


def rl_plans(actor_ds: dict, model: ModelConfig, world_size: int, train_steps: int, rl: RLConfig,
             bf16_supported: bool = False) -> dict[str, DeepSpeedPlan]:
    """Resolve the actor's config (AutoEP) and the critic's and encoder's (dense: no experts)."""
    plans = {"actor": ds_config.resolve(actor_ds, model=model, world_size=world_size, train_steps=train_steps,
                                        bf16_supported=bf16_supported)}
    for name, path in (("critic", rl.critic_ds_config), ("encoder", rl.encoder_ds_config)):
        raw = ds_config.load(path)
        if (raw.get("expert_parallel") or {}).get("enabled"):
            raise KodaError(f"ds_config {path}: the {name} is dense, expert_parallel must be off")
        plans[name] = ds_config.resolve(raw, model=model, world_size=world_size, train_steps=train_steps,
                                        bf16_supported=bf16_supported)
    plans["reference"] = inference_plan(plans["actor"])
    return plans


def _actor(model: ModelConfig, initial: dict[str, torch.Tensor] | None) -> KodaForCausalLM:
    network = KodaForCausalLM(model)
    if initial is not None:
        load_weights(network, initial)
    return network


def build_rl_engines(model: ModelConfig, plans: dict[str, DeepSpeedPlan], rl: RLConfig, seed: int = 0,
                     encoder_dim: int = 128, initial: dict[str, torch.Tensor] | None = None,
                     actor_optimizer: dict | None = None) -> RLEngines:
    """Collective: the networks `rl` needs. `initial`: the actor's (and reference's) starting
    weights (``koda.run.init_from.initial_state``), else a fresh draw from `seed`.
    `actor_optimizer`: ``build_engine``'s ``parameters`` / ``optimizer`` for a client optimizer."""
    from koda.model.critic import KodaCritic
    from koda.model.encoder import EncoderConfig, KodaEncoder

    factory = functools.partial(_actor, model, initial)
    torch.manual_seed(seed)
    actor = build_engine("actor", factory, plans["actor"], **(actor_optimizer or {}))
    critic = encoder = reference = None
    if rl.uses_critic:
        torch.manual_seed(seed + 1)
        critic = build_engine("critic", functools.partial(KodaCritic, model), plans["critic"])
    if rl.uses_encoder:
        torch.manual_seed(seed + 2)
        enc_cfg = EncoderConfig(vocab_size=model.vocab_size, d_model=encoder_dim)
        encoder = build_engine("encoder", functools.partial(KodaEncoder, enc_cfg), plans["encoder"])
    if rl.uses_reference:
        torch.manual_seed(seed)                  # the actor's draw: the reference starts where the actor does
        reference = build_engine("reference", factory, plans["reference"])
        for p in reference.module.parameters():
            p.requires_grad_(False)
        reference.eval()
    return RLEngines(actor, critic, encoder, reference)
