"""Rank jobs for the rollout tests (run through tests.helpers.ranks.run_ranks)."""

from __future__ import annotations

import functools

import torch

EXPERT_SUFFIXES = (".experts.w1", ".experts.w2", ".experts.w3")


def tiny_engine(seed: int = 0):
    """The TINY actor under ZeRO-3 + AutoEP (fp32) and the plain model it started from."""
    from koda.distributed import comm, ds_config
    from koda.distributed.engine import build_engine
    from koda.model import KodaForCausalLM
    from tests.helpers.tiny import TINY

    raw = ds_config.load("zero3_ep_smoke.json")
    raw["scheduler"]["params"]["warmup_num_steps"] = 1     # full learning rate at once: a step moves the weights
    resolved = ds_config.resolve(raw, model=TINY, world_size=comm.world_size(), train_steps=100,
                                 bf16_supported=False)
    torch.manual_seed(seed)
    reference = KodaForCausalLM(TINY).eval()
    torch.manual_seed(seed)          # the partitioned build draws the same weights (koda.model.init)
    return build_engine("actor", functools.partial(KodaForCausalLM, TINY), resolved), reference


def converted(engine):
    """Collective: the engine's current weights as a standalone KodaForCausalLM, read from the
    optimizer's fp32 partitions (``safe_get_full_fp32_param``, not the rollout's gather) and
    mapped with KODA's own AutoEP -> KODA names (experts from every rank, in rank order)."""
    from deepspeed.utils import safe_get_full_fp32_param

    from koda.model import KodaForCausalLM
    from koda.naming import assemble, autoep_to_koda_plan

    state = {}
    for name, param in engine.module.named_parameters():
        tensor = safe_get_full_fp32_param(param)
        if name.endswith(EXPERT_SUFFIXES):
            parts = [torch.empty_like(tensor) for _ in range(torch.distributed.get_world_size())]
            torch.distributed.all_gather(parts, tensor.contiguous())
            tensor = torch.cat(parts)                                   # [E, ...], experts in rank order
        state[name] = tensor
    blocks = sorted({n.rsplit(".experts.", 1)[0] for n in state if n.endswith(EXPERT_SUFFIXES)})
    plan = autoep_to_koda_plan({n: tuple(t.shape) for n, t in state.items()}, blocks)
    model = KodaForCausalLM(engine.module.cfg)
    model.load_state_dict({name: assemble(sources, state.__getitem__) for name, (_, sources) in plan.items()})
    return model.eval()


def _train_step(engine, probe, rank: int, step: int) -> float:
    engine.train()
    g = torch.Generator().manual_seed(100 * step + rank)
    batch = torch.randint(4, engine.module.cfg.vocab_size, (4, 17), generator=g)
    logits = engine(batch[:, :-1])
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), batch[:, 1:].reshape(-1))
    aux, _ = probe.losses()
    engine.backward(ce + 0.01 * aux)
    engine.step()
    return float(ce)


def _expert_loads(engine) -> list[list[float]]:
    return [layer.mlp.tokens_per_expert.tolist() for layer in engine.module.model.layers
            if hasattr(layer.mlp, "tokens_per_expert")]


def _logprobs_of(model, prompt: list[int], completion: list[int]) -> list[float]:
    """log p(completion[t] | prompt, completion[:t]) from one full forward of the plain model."""
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids)[0].float(), dim=-1)                # [S, V]
    positions = torch.arange(len(prompt) - 1, len(prompt) + len(completion) - 1)
    return logp[positions, torch.tensor(completion)].tolist()


def lockstep_rollouts(experts: str = "parallel") -> dict:
    """Ranks generate different lengths, train a step, generate again (sampling), train again;
    greedy tokens compared with the plain model before training and the converted one after.
    `experts`: ``rollout_phase``'s (AutoEP's all-to-all per token, or every expert on every rank)."""
    from koda.distributed import comm
    from koda.distributed.rollout import rollout_phase
    from koda.infer import GenerationConfig, generate
    from koda.run.router_probe import RouterProbe
    from tests.helpers.infer import random_prompts

    rank = comm.rank()
    engine, reference = tiny_engine()
    probe = RouterProbe(engine.module, engine.module.cfg.top_k)
    prompts = random_prompts((5, 9, 7) if rank == 0 else (11, 4), seed=rank)
    new_tokens = 12 if rank == 0 else 3                  # rank 1 finishes 9 steps earlier
    greedy = GenerationConfig(max_new_tokens=new_tokens)
    out: dict = {"rank": rank}

    loads_before = _expert_loads(engine)
    with rollout_phase(engine, experts) as phase:
        first = phase.generate(prompts, greedy, step=0, eos_id=None)
    out["steps"] = first.steps
    out["shape"] = list(first.ids.shape)
    out["greedy_equal_before"] = ([first.completion(i) for i in range(len(prompts))]
                                  == [c.token_ids for c in generate(reference, prompts, greedy, eos_id=None)])
    out["probe_untouched"] = not probe._logits and not probe.take_counts()
    out["autoep_load_untouched"] = _expert_loads(engine) == loads_before
    out["logprobs_grad_free"] = not first.logprobs.requires_grad and not first.logprobs.is_inference()

    # WarmupCosineLR runs its first two steps at lr 0: the third moves the weights
    out["losses"] = [_train_step(engine, probe, rank, step) for step in (1, 2, 3)]

    shared = random_prompts((6, 8), seed=7)              # the same prompts on both ranks
    sample = GenerationConfig(strategy="sample", max_new_tokens=new_tokens, seed=5, top_k=50)
    with rollout_phase(engine, experts) as phase:
        drawn = phase.generate(shared, sample, step=1, eos_id=None)
        again = phase.generate(shared, sample, step=1, eos_id=None)
        next_step = phase.generate(shared, sample, step=2, eos_id=None)
        second = phase.generate(prompts, greedy, step=1, eos_id=None)
    standalone = converted(engine)
    out["sample_reproducible"] = torch.equal(drawn.ids, again.ids) and torch.equal(drawn.logprobs, again.logprobs)
    out["sample_changes_with_step"] = not torch.equal(drawn.ids, next_step.ids)
    out["sample_first3"] = drawn.ids[:, :3].tolist()
    out["sample_lengths"] = drawn.mask.sum(dim=1).tolist()
    # Logprobs are of the temperature-1 full distribution here (top_k does not enter them).
    recomputed = [_logprobs_of(standalone, shared[i], drawn.completion(i)) for i in range(len(shared))]
    out["logprob_max_err"] = max(abs(a - b) for i, row in enumerate(recomputed)
                                 for a, b in zip(row, drawn.logprobs[i][drawn.mask[i]].tolist(), strict=True))
    out["greedy_equal_after"] = ([second.completion(i) for i in range(len(prompts))]
                                 == [c.token_ids for c in generate(standalone, prompts, greedy, eos_id=None)])
    out["weights_moved"] = max((a - b).abs().max().item() for a, b in
                               zip(standalone.state_dict().values(), reference.state_dict().values(), strict=True))
    out["losses"].append(_train_step(engine, probe, rank, 4))
    return out


def failure_on_one_rank(experts: str = "parallel") -> dict:
    """Rank 1's stop callback raises at its third token: both ranks get a KodaError at the
    same step, and a training step afterwards pairs up normally."""
    from koda.distributed import comm
    from koda.distributed.rollout import rollout_phase
    from koda.errors import KodaError
    from koda.infer import GenerationConfig
    from koda.run.router_probe import RouterProbe
    from tests.helpers.infer import random_prompts

    rank = comm.rank()
    engine, _ = tiny_engine()
    probe = RouterProbe(engine.module, engine.module.cfg.top_k)

    def stop(_prompt: int, generated: list[int]) -> bool:
        if rank == 1 and len(generated) == 3:
            raise ValueError("stop test exploded")
        return False

    out: dict = {"rank": rank}
    with rollout_phase(engine, experts) as phase:
        try:
            phase.generate(random_prompts((6, 5), seed=rank), GenerationConfig(max_new_tokens=8), step=0,
                           eos_id=None, should_stop=stop)
            out["error"] = None
        except KodaError as e:
            out["error"] = str(e)
        out["after"] = phase.generate(random_prompts((4,), seed=3), GenerationConfig(max_new_tokens=2 + rank),
                                      step=0, eos_id=None).completion(0)
    out["loss"] = _train_step(engine, probe, rank, 1)
    return out
