"""One step of the hybrid RL stage on three DeepSpeed engines: actor, critic, encoder.

    engines = build_rl_engines(model_cfg, rl_plans(actor_ds, model_cfg, world, steps), rl)
    step = RLStep(engines, tokenizer, train_tasks, rl)
    metrics = step.run(step_index)           # collective; identical dict on every rank

Every rank runs the same sequence of forwards and backwards on every engine, whatever its
data: ZeRO-3 gathers and AutoEP's all-to-all are collectives, so a rank that skipped one
forward would pair its next call with another rank's different one. Nothing below branches
on a rank's own data; the only branches read the config, which is the same everywhere.

Order per step: rollout (gathered actor replica, lockstep) -> judge -> critic values (no
grad) -> advantages -> actor update (one forward over rollout rows and reference rows: PPO
surrogate + CE + the adversarial term) -> critic update (clipped value loss) -> ``n_critic``
encoder updates (WGAN-GP). The adversarial term reaches the actor through Gumbel-softmax
rows fed to the encoder; its gradient with respect to those rows is taken with
``torch.autograd.grad(..., inputs=rows)``, so no encoder parameter gradient is accumulated
and the encoder's ZeRO-3 reduction hooks never fire inside the actor's step.

The encoder's plan (``ds_configs/zero3_encoder_smoke.json``) is ZeRO stage 2: WGAN-GP's
penalty needs a double backward, which fails under ZeRO-3 in DeepSpeed 0.19.8 (docs/rl.md).

No reference policy engine exists yet, so ``rl.kl_coef`` is not applied; ``rl/kl`` is the
k3 estimate of KL(rollout policy || updated policy) over the completion tokens.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from koda.data.tokenizer import EOS, PAD
from koda.distributed import comm, ds_config
from koda.distributed.ds_config import DeepSpeedPlan
from koda.distributed.engine import Engine, build_engine
from koda.distributed.rollout import rollout_phase
from koda.errors import KodaError
from koda.infer.config import GenerationConfig
from koda.model import KodaForCausalLM
from koda.model.config import ModelConfig
from koda.objectives import (
    critic_loss,
    gae,
    generator_loss,
    gradient_penalty,
    group_advantages,
    gumbel_softmax,
    masked_mean,
    policy_loss,
    token_entropy,
    token_rewards,
    value_loss,
)
from koda.rl.config import RLConfig
from koda.rl.experience import Experience
from koda.rl.rewards import COMPONENTS, RewardSample, score
from koda.rl.tracker import RunningMoments
from koda.tasks import Task

CRITIC_DS = "zero3_critic_smoke.json"
ENCODER_DS = "zero3_encoder_smoke.json"


@dataclass
class RLEngines:
    actor: Engine
    critic: Engine | None      # None when the advantages need no critic (grpo / rloo, or lrl 0)
    encoder: Engine | None     # None when rl.lvw is 0

    def items(self) -> dict[str, Engine]:
        """The engines that exist, by name (what ``koda.distributed.checkpoint.save`` takes)."""
        return {n: e for n, e in (("actor", self.actor), ("critic", self.critic), ("encoder", self.encoder))
                if e is not None}


def rl_plans(actor_ds: dict, model: ModelConfig, world_size: int, train_steps: int, bf16_supported: bool = False,
             critic_ds: str = CRITIC_DS, encoder_ds: str = ENCODER_DS) -> dict[str, DeepSpeedPlan]:
    """Resolve the actor's config (AutoEP) and the critic's and encoder's (dense: no experts)."""
    plans = {"actor": ds_config.resolve(actor_ds, model=model, world_size=world_size, train_steps=train_steps,
                                        bf16_supported=bf16_supported)}
    for name, path in (("critic", critic_ds), ("encoder", encoder_ds)):
        raw = ds_config.load(path)
        if (raw.get("expert_parallel") or {}).get("enabled"):
            raise KodaError(f"ds_config {path}: the {name} is dense, expert_parallel must be off")
        plans[name] = ds_config.resolve(raw, model=model, world_size=world_size, train_steps=train_steps,
                                        bf16_supported=bf16_supported)
    return plans


def build_rl_engines(model: ModelConfig, plans: dict[str, DeepSpeedPlan], rl: RLConfig, seed: int = 0,
                     encoder_dim: int = 128) -> RLEngines:
    """Collective: the three networks, one ``build_engine`` call each (never nested)."""
    from koda.model.critic import KodaCritic
    from koda.model.encoder import EncoderConfig, KodaEncoder

    torch.manual_seed(seed)
    actor = build_engine("actor", functools.partial(KodaForCausalLM, model), plans["actor"])
    critic = encoder = None
    if rl.uses_critic:
        torch.manual_seed(seed + 1)
        critic = build_engine("critic", functools.partial(KodaCritic, model), plans["critic"])
    if rl.uses_encoder:
        torch.manual_seed(seed + 2)
        enc_cfg = EncoderConfig(vocab_size=model.vocab_size, d_model=encoder_dim)
        encoder = build_engine("encoder", functools.partial(KodaEncoder, enc_cfg), plans["encoder"])
    return RLEngines(actor, critic, encoder)


def _pad(rows: list[list[int]], width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token rows -> (ids [N, T] long, real-token mask [N, T] bool)."""
    width = width or max(len(r) for r in rows)
    ids = torch.full((len(rows), width), PAD, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, :len(row)] = True
    return ids, mask


def _shift_right(x: torch.Tensor) -> torch.Tensor:
    """[N, T] -> [N, T] with entry t = x[:, t - 1] and 0 at t = 0: puts what position t-1
    predicts (next-token log-prob, value of the state) on the token it scores."""
    return F.pad(x[:, :-1], (1, 0))


def _token_logprobs(logits: torch.Tensor, ids: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """logits [N, T, V], ids [N, T] -> [N, T]: entry t = log p(ids[:, t] | ids[:, < t]) under
    softmax(logits / temperature) (the rollout's distribution), 0 at t = 0."""
    logp = torch.log_softmax(logits[:, :-1].float() / temperature, dim=-1)
    return F.pad(logp.gather(-1, ids[:, 1:, None]).squeeze(-1), (1, 0))


class _Clock:
    """Seconds per phase of one step, summed over repeats (``with clock("actor_fwd"): ...``)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            key = f"time/{name}"
            self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - start


class RLStep:
    """The RL step over fixed engines, tokenizer and train tasks (see the module docstring).

    Prompts: rank r's i-th prompt of step s is task ``((s * W + r) * P + i) mod N``, so ranks
    see disjoint slices each step and a rerun sees the same ones.
    """

    def __init__(self, engines: RLEngines, tokenizer, tasks: list[Task], rl: RLConfig, *, seed: int = 0,
                 pool=None, policy=None):
        if not tasks:
            raise KodaError("RL step: no train tasks")
        self.engines, self.tokenizer, self.tasks, self.rl = engines, tokenizer, tasks, rl
        self.seed, self.pool, self.policy = seed, pool, policy
        self.max_len = engines.actor.module.cfg.max_seq_len
        if rl.max_new_tokens >= self.max_len:
            raise KodaError(f"rl.max_new_tokens {rl.max_new_tokens} leaves no room for a prompt in "
                            f"model.max_seq_len {self.max_len}")
        self.advantage_moments = RunningMoments()

    def prompts_of(self, step: int) -> list[Task]:
        P, W, r = self.rl.prompts_per_step, comm.world_size(), comm.rank()
        return [self.tasks[((step * W + r) * P + i) % len(self.tasks)] for i in range(P)]

    def run(self, step: int) -> dict[str, float]:
        """Collective: one RL step; returns the metrics averaged over ranks (same on every rank)."""
        rl, clock = self.rl, _Clock()
        tasks = self.prompts_of(step)
        G = rl.samples_per_prompt
        prompt_rows = [self.tokenizer.encode(t.prompt)[-(self.max_len - rl.max_new_tokens):] for t in tasks]
        ref_rows = [self.tokenizer.encode(t.program())[:self.max_len] for t in tasks]
        expanded = [row for row in prompt_rows for _ in range(G)]                 # B = P * G, siblings adjacent

        cfg = GenerationConfig(strategy="sample", max_new_tokens=rl.max_new_tokens, temperature=rl.temperature,
                               seed=self.seed)
        with rollout_phase(self.engines.actor) as phase, clock("generation"):
            rollout = phase.generate(expanded, cfg, step=step, eos_id=EOS)

        samples = [RewardSample(tasks[i // G].program(self.tokenizer.decode(rollout.completion(i))),
                                tasks[i // G].program(), tasks[i // G].tests(), tasks[i // G].entry_point,
                                tasks[i // G].target) for i in range(len(expanded))]
        with clock("judging"):
            rewards = score(samples, rl.rewards, pool=self.pool, policy=self.policy, budget_s=rl.judge_budget_s)
        exp = self._experience(expanded, rollout, torch.tensor([r.total for r in rewards], dtype=torch.float32),
                               clock)

        metrics: dict[str, float] = {}
        for name in (*COMPONENTS, "total", "failed"):
            key = f"rl/reward/{name}"
            metrics[key] = sum(r.log_items()[key] for r in rewards) / len(rewards)
        metrics["rl/completion_tokens"] = float(rollout.mask.sum(dim=1).float().mean())
        metrics |= self._actor_update(exp, ref_rows, step, clock)
        if self.engines.critic is not None:
            metrics |= self._critic_update(exp, clock)
        if self.engines.encoder is not None:
            metrics |= self._encoder_updates(exp, ref_rows, step, clock)
        return _mean_over_ranks(metrics | clock.seconds)

    def _experience(self, prompts: list[list[int]], rollout, scores: torch.Tensor, clock: _Clock) -> Experience:
        """Prompt + completion rows with the rollout's log-probs, values and advantages, [B, T]."""
        rl = self.rl
        completions = [rollout.ids[i][rollout.mask[i]].tolist() for i in range(len(prompts))]   # EOS kept
        seq, att = _pad([p + c for p, c in zip(prompts, completions, strict=True)])
        action = torch.zeros_like(att)
        old = torch.zeros(att.shape, dtype=torch.float32)
        for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
            action[i, len(p):len(p) + len(c)] = True
            old[i, len(p):len(p) + len(c)] = rollout.logprobs[i][rollout.mask[i]]
        values = None
        if self.engines.critic is not None:
            critic = self.engines.critic
            critic.eval()
            with torch.no_grad(), clock("critic_fwd"):
                values = _shift_right(critic(seq, att)).float() * action
        group = torch.arange(len(prompts)) // rl.samples_per_prompt
        if rl.advantage == "gae":
            if values is None:
                raise KodaError("rl.advantage gae needs the critic engine (rl.lrl > 0)")
            token_r = token_rewards(scores, action)
            adv, returns = gae(token_r, values, action, rl.gamma, rl.lam)
        else:
            token_r, returns = None, None
            adv = group_advantages(scores, rl.samples_per_prompt, rl.advantage)[:, None] * action
        if rl.normalize_advantages:
            self.advantage_moments.update(adv, action)
            adv = self.advantage_moments.normalize(adv) * action
        return Experience(seq, att, action, old, values=values, rewards=token_r, advantages=adv.float(),
                          returns=returns, group=group)

    def _actor_update(self, exp: Experience, ref_rows: list[list[int]], step: int, clock: _Clock) -> dict:
        """One forward over [rollout rows; reference rows]: PPO + CE (+ adversarial), one step."""
        rl, actor = self.rl, self.engines.actor
        B = exp.batch_size
        width = max(exp.sequences.shape[1], max(len(r) for r in ref_rows))
        ref_ids, ref_att = _pad(ref_rows, width)
        pad_cols = width - exp.sequences.shape[1]
        ids = torch.cat([F.pad(exp.sequences, (0, pad_cols), value=PAD), ref_ids])            # [B + P, T]
        att = torch.cat([F.pad(exp.attention_mask, (0, pad_cols)), ref_att])
        action = F.pad(exp.action_mask, (0, pad_cols))                                          # [B, T]
        actor.train()
        with clock("actor_fwd"):
            logits = actor(ids, attention_mask=att)                                  # [B + P, T, V]
            pol = policy_loss(_token_logprobs(logits[:B], ids[:B], rl.temperature),
                              F.pad(exp.old_logprobs, (0, pad_cols)), F.pad(exp.advantages, (0, pad_cols)),
                              action, rl.clip)
            entropy = token_entropy(logits[:B, :-1] / rl.temperature, action[:, 1:])
            targets = ref_att.clone()
            targets[:, 0] = False                                                    # the first token has no context
            ce = masked_mean(-_token_logprobs(logits[B:], ids[B:]), targets)
            loss = rl.lce * ce + rl.lrl * (pol.loss - rl.entropy_coef * entropy)
            out = {"rl/policy_loss": float(pol.loss), "rl/kl": float(pol.approx_kl),
                   "rl/clip_fraction": float(pol.clip_fraction), "rl/entropy": float(entropy), "rl/ce": float(ce)}
            if self.engines.encoder is not None:
                adv_term, gen = self._adversarial(logits[:B], ids[:B], att[:B], action, step)
                loss = loss + rl.lvw * adv_term
                out["gan/generator_loss"] = gen
            out["rl/actor_loss"] = float(loss)
        with clock("actor_bwd"):
            actor.backward(loss)
            actor.step()
        return out

    def _adversarial(self, logits: torch.Tensor, ids: torch.Tensor, att: torch.Tensor, action: torch.Tensor,
                     step: int) -> tuple[torch.Tensor, float]:
        """Surrogate whose actor gradient equals that of -E[D(fake)] through Gumbel rows.

        logits: [B, T, V] actor logits; ids, att, action: [B, T]. The fake row is the prompt as
        one-hot rows followed by Gumbel-softmax samples at the completion positions."""
        rl, encoder = self.rl, self.engines.encoder
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step * 1009 + comm.rank())
        soft = gumbel_softmax(logits[:, :-1].float(), rl.gumbel_tau, hard=rl.straight_through, generator=g)
        hard = F.one_hot(ids, logits.shape[-1]).float()                                 # [B, T, V]
        fake = torch.cat([hard[:, :1], torch.where(action[:, 1:, None], soft, hard[:, 1:])], dim=1)
        rows = fake.detach().requires_grad_(True)
        encoder.eval()
        gen = generator_loss(encoder.module(rows, att))
        (grad,) = torch.autograd.grad(gen, [rows])
        return (fake * grad).sum(), float(gen)

    def _critic_update(self, exp: Experience, clock: _Clock) -> dict:
        rl, critic = self.rl, self.engines.critic
        critic.train()
        with clock("critic_fwd"):
            values = _shift_right(critic(exp.sequences, exp.attention_mask)).float()          # [B, T]
            loss = value_loss(values, exp.values, exp.returns, exp.action_mask, rl.value_clip)
        with clock("critic_bwd"):
            critic.backward(rl.value_coef * loss)
            critic.step()
        return {"rl/value_loss": float(loss),
                "rl/value_mean": float(masked_mean(exp.values, exp.action_mask))}

    def _encoder_updates(self, exp: Experience, ref_rows: list[list[int]], step: int, clock: _Clock) -> dict:
        """``n_critic`` WGAN-GP steps: reference programs (real) against rollout rows (fake)."""
        rl, encoder = self.rl, self.engines.encoder
        G = rl.samples_per_prompt
        width = max(exp.sequences.shape[1], max(len(r) for r in ref_rows))
        real, real_m = _pad([ref_rows[i // G] for i in range(exp.batch_size)], width)         # [B, T]
        fake = F.pad(exp.sequences, (0, width - exp.sequences.shape[1]), value=PAD)
        fake_m = F.pad(exp.attention_mask, (0, width - exp.sequences.shape[1]))
        ids, mask = torch.cat([real, fake]), torch.cat([real_m, fake_m])                        # [2B, T]
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step * 1009 + 500 + comm.rank())
        module = encoder.module
        encoder.train()
        w_sum = gp_sum = 0.0
        B = exp.batch_size
        for _ in range(rl.n_critic):
            with clock("encoder_fwd"):
                emb = module.embed(ids)                                                         # [2B, T, D]
                scores = module.score_embedded(emb, mask)                                       # [2B]
                d_loss = critic_loss(scores[:B], scores[B:])
                gp, _ = gradient_penalty(module.score_embedded, emb[:B], emb[B:], real_m | fake_m, generator=g)
            with clock("encoder_bwd"):
                encoder.backward(d_loss + rl.gp_lambda * gp)
                encoder.step()
            w_sum, gp_sum = w_sum - float(d_loss), gp_sum + float(gp)
        return {"gan/wasserstein": w_sum / rl.n_critic, "gan/gp": gp_sum / rl.n_critic}


def _mean_over_ranks(metrics: dict[str, float]) -> dict[str, float]:
    """Collective: every metric averaged over ranks (keys sorted: the same order everywhere)."""
    keys = sorted(metrics)
    summed = comm.all_reduce_sum(torch.tensor([metrics[k] for k in keys], dtype=torch.float64))
    return {k: float(v) / comm.world_size() for k, v in zip(keys, summed.tolist(), strict=True)}
