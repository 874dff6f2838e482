"""One step of the hybrid RL stage on the engines of ``koda.rl.engines``.

    engines = build_rl_engines(model_cfg, rl_plans(actor_ds, model_cfg, world, steps, rl), rl)
    with RLStep(engines, tokenizer, train_tasks, rl, pool=pool) as step:
        metrics = step.run(step_index)       # collective; identical dict on every rank

Every rank runs the same sequence of forwards and backwards on every engine, whatever its
data: ZeRO-3 gathers and AutoEP's all-to-all are collectives, so a rank that skipped one
forward would pair its next call with another rank's different one. Nothing below branches
on a rank's own data; the only branches read the config, which is the same everywhere.

Order per step: rollout in ``rl.rollout_chunks`` chunks (gathered actor replica, lockstep),
each chunk judged on a background thread while the next is generated -> reference log-probs
and critic values (no grad) -> advantages (KL-in-reward folded in) -> ``rl.ppo_epochs`` times:
actor update (one forward over rollout rows and reference rows: PPO surrogate + KL-in-loss
+ CE + the adversarial term) and critic update (clipped value loss) -> ``n_critic`` encoder
updates (WGAN-GP). With ``lrl = lvw = 0`` nothing is generated: the step is CE on the
reference programs alone. The adversarial term reaches the actor through Gumbel-softmax
rows fed to the encoder; its gradient with respect to those rows is taken with
``torch.autograd.grad(..., inputs=rows)``, so no encoder parameter gradient is accumulated
and the encoder's reduction hooks never fire inside the actor's step.

The encoder's plan (``ds_configs/zero3_encoder_smoke.json``) is ZeRO stage 2: WGAN-GP's
penalty needs a double backward, which fails under ZeRO-3 in DeepSpeed 0.19.8 (docs/rl.md).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from koda.config.rl import RLConfig
from koda.config.run import MoEConfig
from koda.data.tokenizer import EOS, PAD
from koda.distributed import comm
from koda.distributed.rollout import replica_of, rollout_phase, torch_linear
from koda.errors import KodaError
from koda.infer.config import GenerationConfig
from koda.objectives import (
    critic_loss,
    gae,
    generator_loss,
    gradient_penalty,
    group_advantages,
    gumbel_softmax,
    kl_penalty,
    masked_mean,
    policy_loss,
    token_entropy,
    token_rewards,
    value_loss,
)
from koda.rl.engines import RLEngines
from koda.rl.experience import Experience
from koda.rl.judging import OverlappedJudge
from koda.rl.rewards import COMPONENTS, RewardSample
from koda.rl.tracker import RunningMoments
from koda.run.router_probe import RouterProbe
from koda.tasks import Task


def _pad(rows: list[list[int]], width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token rows -> (ids [N, T] long, real-token mask [N, T] bool)."""
    width = width or max(len(r) for r in rows)
    ids = torch.full((len(rows), width), PAD, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, :len(row)] = True
    return ids, mask


def task_order(n: int, seed: int) -> list[int]:
    """The order an RL run visits its n train tasks in: a permutation drawn from `seed`."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()


def prompt_ids(tokenizer, prompt: str, room: int) -> list[int]:
    """The end-of-text token, then the prompt, cut from the left to `room` tokens: the context
    ``koda eval`` (``koda.infer.complete``) gives a prompt and a document window starts with."""
    return [EOS, *tokenizer.encode(prompt)][-room:]


def document_ids(tokenizer, text: str, max_len: int) -> list[int]:
    """A reference program as pre-training saw a document: between end-of-text tokens (the
    closing one teaches the actor to stop), cut to `max_len`."""
    return [EOS, *tokenizer.encode(text), EOS][:max_len]


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


@dataclass(frozen=True)
class Completion:
    """One sampled completion: what the update needs and what the judge reads."""
    tokens: list[int]            # EOS included when it was sampled
    logprobs: torch.Tensor       # [len(tokens)] fp32, log p under softmax(logits / temperature)
    text_tokens: list[int]       # tokens without EOS: what is decoded into the program


class RLStep:
    """The RL step over fixed engines, tokenizer and train tasks (see the module docstring).

    Prompts: rank r's i-th prompt of step s is task ``order[((s * W + r) * P + i) mod N]``, with
    ``order`` a permutation of the N train tasks drawn from `seed` (the task list is grouped by
    family; in list order a run would train on one family for many steps), so ranks see
    disjoint slices each step and a rerun sees the same ones. Sampling, Gumbel noise and
    the gradient penalty's interpolation draw from generators seeded by (seed, step, rank),
    so a resumed step repeats the uninterrupted one without any saved RNG stream.
    """

    def __init__(self, engines: RLEngines, tokenizer, tasks: list[Task], rl: RLConfig, *, seed: int = 0,
                 pool=None, policy=None, moe: MoEConfig | None = None):
        if not tasks:
            raise KodaError("RL step: no train tasks")
        self.engines, self.tokenizer, self.tasks, self.rl = engines, tokenizer, tasks, rl
        self.seed = seed
        self.order = task_order(len(tasks), seed)
        self.max_len = engines.actor.module.cfg.max_seq_len
        if rl.max_new_tokens >= self.max_len:
            raise KodaError(f"rl.max_new_tokens {rl.max_new_tokens} leaves no room for a prompt in "
                            f"model.max_seq_len {self.max_len}")
        self.advantage_moments = RunningMoments()
        # AutoEP has no load balancing of its own: the actor keeps pre-training's balancing terms
        self.moe = moe or MoEConfig(aux_loss_weight=0.0)
        self.probe = RouterProbe(engines.actor.module, engines.actor.module.cfg.top_k)
        self._reference = None       # the frozen reference's local replica, built at its first use
        self.last_group: list[dict] = []  # this rank's first prompt group of the last step: text and rewards
        self.judge = OverlappedJudge(rl.rewards, pool=pool, policy=policy, budget_s=rl.judge_budget_s,
                                     workers=rl.judge_workers)

    # the step's state beyond the engines: what a checkpoint must carry
    def state_dict(self) -> dict:
        return {"advantage_moments": self.advantage_moments.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.advantage_moments.load_state_dict(state["advantage_moments"])

    def close(self) -> None:
        self.judge.close()

    def __enter__(self) -> RLStep:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def prompts_of(self, step: int) -> list[Task]:
        P, W, r = self.rl.prompts_per_step, comm.world_size(), comm.rank()
        return [self.tasks[self.order[((step * W + r) * P + i) % len(self.tasks)]] for i in range(P)]

    def run(self, step: int) -> dict[str, float]:
        """Collective: one RL step; returns the metrics averaged over ranks (same on every rank)."""
        rl, clock = self.rl, _Clock()
        tasks = self.prompts_of(step)
        prompt_rows = [prompt_ids(self.tokenizer, t.prompt, self.max_len - rl.max_new_tokens) for t in tasks]
        ref_rows = [document_ids(self.tokenizer, t.program(), self.max_len) for t in tasks]
        metrics: dict[str, float] = {}
        exp = None
        if rl.uses_rollouts:
            expanded = [row for row in prompt_rows for _ in range(rl.samples_per_prompt)]   # B = P * G
            completions, rewards = self._rollouts(tasks, prompt_rows, step, clock, metrics)
            scores = torch.tensor([r.total for r in rewards], dtype=torch.float32)
            exp = self._experience(expanded, completions, scores, clock, metrics)
            for name in (*COMPONENTS, "total", "failed"):
                key = f"rl/reward/{name}"
                metrics[key] = sum(r.log_items()[key] for r in rewards) / len(rewards)
        epochs = rl.ppo_epochs if exp is not None else 1
        for _ in range(epochs):          # the last epoch's losses are logged
            metrics |= self._actor_update(exp, ref_rows, step, clock)
            if self.engines.critic is not None:
                metrics |= self._critic_update(exp, clock)
        if self.engines.encoder is not None:
            metrics |= self._encoder_updates(exp, ref_rows, step, clock)
        return _mean_over_ranks(metrics | clock.seconds)

    @torch.no_grad()
    def heldout_ce(self, tasks: list[Task]) -> dict[str, float]:
        """Collective: the actor's CE on the reference programs (``document_ids``) of `tasks`,
        teacher-forced. Rows are split over the ranks; each rank runs one forward of the same
        [ceil(N / W), T] shape (filler rows carry no weight), so the collectives pair up."""
        W, r = comm.world_size(), comm.rank()
        rows = [document_ids(self.tokenizer, t.program(), self.max_len) for t in tasks]
        per = -(-len(rows) // W)
        mine = rows[r * per:(r + 1) * per]
        real = len(mine)
        ids, att = _pad(mine + [rows[0]] * (per - real), max(len(x) for x in rows))       # [per, T]
        actor = self.engines.actor
        actor.eval()
        self.probe.enabled = False
        logits = actor(ids, attention_mask=att)                                          # [per, T, V]
        self.probe.enabled = True
        targets = att.clone()
        targets[:, 0] = False
        targets[real:] = False
        nll = -_token_logprobs(logits, ids)
        total = comm.all_reduce_sum(torch.stack([(nll * targets).sum().float(), targets.sum().float()]))
        return {"val/heldout_ce": float(total[0] / total[1])}

    def _rollouts(self, tasks: list[Task], prompt_rows: list[list[int]], step: int, clock: _Clock,
                  metrics: dict) -> tuple[list[Completion], list]:
        """Collective: G samples per prompt in ``rl.rollout_chunks`` chunks of whole prompt
        groups; each completion goes to the judge as soon as it ends (EOS, or the length limit
        at the chunk's last step), so judging runs behind the rest of the decoding."""
        rl, G, C = self.rl, self.rl.samples_per_prompt, self.rl.rollout_chunks
        cfg = GenerationConfig(strategy="sample", max_new_tokens=rl.max_new_tokens, temperature=rl.temperature,
                               top_k=rl.top_k, top_p=rl.top_p, seed=self.seed)
        bounds = [len(tasks) * c // C for c in range(C + 1)]            # prompt index ranges per chunk
        completions: list[Completion] = []
        judged: list[int] = []           # completion indices in the order they went to the judge

        def to_judge(first: int):
            def on_finish(done: list[tuple[int, list[int], str]]) -> None:
                self.judge.submit([self._sample(tasks[(first + j) // G], ids[:-1] if reason == "eos" else list(ids))
                                   for j, ids, reason in done])
                judged.extend(first + j for j, _, _ in done)
            return on_finish

        with clock("generation"), rollout_phase(self.engines.actor, rl.rollout_experts) as phase:
            metrics["time/rollout_gather"] = phase.gather_s
            for c in range(C):
                chunk = range(bounds[c], bounds[c + 1])
                rows = [prompt_rows[i] for i in chunk for _ in range(G)]
                rollout = phase.generate(rows, cfg, step=step * C + c, eos_id=EOS,       # same count on every rank
                                         on_finish=to_judge(bounds[c] * G))
                completions += [Completion(rollout.ids[j][rollout.mask[j]].tolist(),
                                           rollout.logprobs[j][rollout.mask[j]], rollout.completion(j))
                                for j in range(len(rows))]
        rewards, timing = self.judge.collect()
        if sorted(judged) != list(range(len(completions))):
            raise KodaError(f"RL step {step}: {len(judged)} completions judged, {len(completions)} generated")
        by_index = dict(zip(judged, rewards, strict=True))
        rewards = [by_index[i] for i in range(len(completions))]
        self.last_group = [{"task_id": tasks[0].task_id, "completion": self.tokenizer.decode(c.text_tokens),
                            "reward": r.total, "status": r.status, **r.components}
                           for c, r in zip(completions[:G], rewards[:G], strict=True)]
        generated = sum(len(c.tokens) for c in completions)
        metrics["rl/completion_tokens"] = generated / len(completions)
        metrics["perf/rollout_tokens_per_s"] = generated / clock.seconds["time/generation"]
        metrics["time/judging"] = timing.busy_s
        metrics["time/judge_wait"] = timing.wait_s
        metrics["perf/judge_hidden_fraction"] = timing.hidden_fraction
        return completions, rewards

    def _sample(self, task: Task, text_tokens: list[int]) -> RewardSample:
        """What the judge reads of one completion: its tokens without EOS, decoded into the program."""
        return RewardSample(task.program(self.tokenizer.decode(text_tokens)), task.program(), task.tests(),
                            task.entry_point, task.target)

    def _experience(self, prompts: list[list[int]], completions: list[Completion], scores: torch.Tensor,
                    clock: _Clock, metrics: dict) -> Experience:
        """Prompt + completion rows with the rollout's and reference's log-probs, values and
        advantages, all [B, T]."""
        rl = self.rl
        seq, att = _pad([p + c.tokens for p, c in zip(prompts, completions, strict=True)])
        action = torch.zeros_like(att)
        old = torch.zeros(att.shape, dtype=torch.float32)
        for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
            action[i, len(p):len(p) + len(c.tokens)] = True
            old[i, len(p):len(p) + len(c.tokens)] = c.logprobs
        values = ref = kl = None
        if self.engines.reference is not None:
            with torch.no_grad(), clock("reference_fwd"):
                ref = _token_logprobs(self._reference_logits(seq, att), seq, rl.temperature) * action
            kl = kl_penalty(old, ref, "k1") * action                         # [B, T], k1 per token
            metrics["rl/kl_ref"] = float(kl.sum() / action.sum().clamp_min(1))
        if self.engines.critic is not None:
            critic = self.engines.critic
            critic.eval()
            with torch.no_grad(), clock("critic_fwd"):
                values = _shift_right(critic(seq, att)).float() * action
        in_reward = ref is not None and rl.kl_in == "reward"
        group = torch.arange(len(prompts)) // rl.samples_per_prompt
        if rl.lrl == 0:            # the rollouts feed the adversarial term only
            token_r = returns = None
            adv = torch.zeros(att.shape)
        elif rl.advantage == "gae":
            token_r = token_rewards(scores, action, kl if in_reward else None, rl.kl_coef)
            adv, returns = gae(token_r, values, action, rl.gamma, rl.lam)
        else:
            token_r, returns = None, None
            shaped = scores - rl.kl_coef * kl.sum(dim=1) if in_reward else scores
            adv = group_advantages(shaped, rl.samples_per_prompt, rl.advantage)[:, None] * action
        if rl.normalize_advantages and rl.lrl > 0:
            self.advantage_moments.update(adv, action)
            adv = self.advantage_moments.normalize(adv) * action
        return Experience(seq, att, action, old, ref_logprobs=ref, values=values, rewards=token_r,
                          advantages=adv.float(), returns=returns, group=group)

    def _reference_logits(self, seq: torch.Tensor, att: torch.Tensor) -> torch.Tensor:
        """The frozen reference's logits [B, T, V]. With ``rl.rollout_experts: local`` its weights
        never change, so they are gathered once, at the first call (a collective every rank
        reaches in the same step), into a hook-free replica with every expert: its forwards
        are local, no ZeRO-3 gather or all-to-all per step. With ``parallel``: the engine."""
        if self.rl.rollout_experts == "parallel":
            return self.engines.reference(seq, attention_mask=att)
        if self._reference is None:
            self._reference = replica_of(self.engines.reference.module, "local")
        with torch_linear():
            return self._reference(seq, attention_mask=att)

    def _actor_update(self, exp: Experience | None, ref_rows: list[list[int]], step: int, clock: _Clock) -> dict:
        """One forward over [rollout rows; reference rows]: PPO + KL + CE (+ adversarial), one step.
        `exp` None (no rollouts): CE on the reference rows alone."""
        rl, actor = self.rl, self.engines.actor
        B = exp.batch_size if exp is not None else 0
        width = max(exp.sequences.shape[1] if exp is not None else 0, max(len(r) for r in ref_rows))
        ref_ids, ref_att = _pad(ref_rows, width)
        ids, att = ref_ids, ref_att
        if exp is not None:
            pad_cols = width - exp.sequences.shape[1]
            ids = torch.cat([F.pad(exp.sequences, (0, pad_cols), value=PAD), ref_ids])          # [B + P, T]
            att = torch.cat([F.pad(exp.attention_mask, (0, pad_cols)), ref_att])
        actor.train()
        out: dict[str, float] = {}
        with clock("actor_fwd"):
            logits = actor(ids, attention_mask=att)                                  # [B + P, T, V]
            targets = ref_att.clone()
            targets[:, 0] = False                                                    # the first token has no context
            ce = masked_mean(-_token_logprobs(logits[B:], ids[B:]), targets)
            aux, z = self.probe.losses()
            loss = rl.lce * ce + self.moe.aux_loss_weight * aux + self.moe.z_loss_weight * z
            out |= {"rl/ce": float(ce.detach()), "moe/aux_loss": float(aux.detach())}
            if exp is not None:
                loss = loss + self._rl_terms(logits[:B], ids[:B], att[:B], exp, pad_cols, step, out)
            out["rl/actor_loss"] = float(loss.detach())
        with clock("actor_bwd"):
            actor.backward(loss)
            actor.step()
        return out

    def _rl_terms(self, logits: torch.Tensor, ids: torch.Tensor, att: torch.Tensor, exp: Experience,
                  pad_cols: int, step: int, out: dict) -> torch.Tensor:
        """The rollout rows' share of the actor loss: lrl * (PPO - entropy bonus + KL-in-loss)
        + lvw * adversarial. logits: [B, T, V]; ids, att: [B, T] (padded to the batch width)."""
        rl = self.rl
        action = F.pad(exp.action_mask, (0, pad_cols))                                          # [B, T]
        logprobs = _token_logprobs(logits, ids, rl.temperature)
        pol = policy_loss(logprobs, F.pad(exp.old_logprobs, (0, pad_cols)), F.pad(exp.advantages, (0, pad_cols)),
                          action, rl.clip)
        entropy = token_entropy(logits[:, :-1] / rl.temperature, action[:, 1:])
        term = pol.loss - rl.entropy_coef * entropy
        if exp.ref_logprobs is not None and rl.kl_in == "loss":
            kl = masked_mean(kl_penalty(logprobs, F.pad(exp.ref_logprobs, (0, pad_cols)), "k3"), action)
            term = term + rl.kl_coef * kl
            out["rl/kl_ref_loss"] = float(kl.detach())
        out |= {"rl/policy_loss": float(pol.loss.detach()), "rl/kl": float(pol.approx_kl),
                "rl/clip_fraction": float(pol.clip_fraction), "rl/entropy": float(entropy.detach())}
        loss = rl.lrl * term
        if self.engines.encoder is not None:
            adv_term, gen = self._adversarial(logits, ids, att, action, step)
            loss = loss + rl.lvw * adv_term
            out["gan/generator_loss"] = gen
        return loss

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
        return (fake * grad).sum(), float(gen.detach())

    def _critic_update(self, exp: Experience, clock: _Clock) -> dict:
        rl, critic = self.rl, self.engines.critic
        critic.train()
        with clock("critic_fwd"):
            values = _shift_right(critic(exp.sequences, exp.attention_mask)).float()          # [B, T]
            loss = value_loss(values, exp.values, exp.returns, exp.action_mask, rl.value_clip)
        with clock("critic_bwd"):
            critic.backward(rl.value_coef * loss)
            critic.step()
        return {"rl/value_loss": float(loss.detach()),
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
            w_sum, gp_sum = w_sum - float(d_loss.detach()), gp_sum + float(gp.detach())
        return {"gan/wasserstein": w_sum / rl.n_critic, "gan/gp": gp_sum / rl.n_critic}


def _mean_over_ranks(metrics: dict[str, float]) -> dict[str, float]:
    """Collective: every metric averaged over ranks (keys sorted: the same order everywhere)."""
    keys = sorted(metrics)
    summed = comm.all_reduce_sum(torch.tensor([metrics[k] for k in keys], dtype=torch.float64))
    return {k: float(v) / comm.world_size() for k, v in zip(keys, summed.tolist(), strict=True)}
