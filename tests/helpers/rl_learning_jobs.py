"""A task family the TINY policy can solve by chance, and the rank job that trains on it.

Three tasks name the function (``add``, ``sub``, ``mul`` of ``a, b``) and the hidden tests
decide which of three one-line bodies is right. ``prior_weights`` teaches the model the
three bodies equally for every prompt (plain CE before any engine exists), so a rollout
picks the right body about one time in three and GRPO has something to reinforce.

``add`` carries five checks every body passes (types, ``add(0, 0) == 0``) besides the one
that tells the bodies apart, so its rewards sit in a narrow band (5/6 wrong, 1 right) while
``sub`` and ``mul`` score 0 or 1. Per-prompt groups normalise each band to full strength;
groups that mix prompts put every ``add`` sample above a baseline pulled down by the others
and leave it almost no signal, which is how the test tells the two apart.
"""

from __future__ import annotations

import torch

from koda.tasks import Task

BODIES = {"add": "return a + b", "sub": "return a - b", "mul": "return a * b"}
_CHECKS = {"add": "assert candidate(5, 3) == 8\n    assert candidate(2, 4) == 6",
           "sub": "assert candidate(5, 3) == 2\n    assert candidate(2, 4) == -2",
           "mul": "assert candidate(5, 3) == 15\n    assert candidate(2, 4) == 8"}
# passed by all three bodies: they narrow add's reward band without telling the bodies apart
_SHARED = "".join(f"assert isinstance(add({a}, {b}), int)\n" for a, b in ((1, 2), (3, 4), (5, 6), (7, 1))) \
    + "assert add(0, 0) == 0\n"


def arithmetic_tasks() -> list[Task]:
    """add (narrow reward band), sub, mul: one prompt each, the body is the whole answer."""
    return [Task(f"arith/{name}", f"def {name}(a, b):\n    ", body,
                 (_SHARED if name == "add" else "") + f"def check(candidate):\n    {_CHECKS[name]}\n",
                 name, family="arith", split="train")
            for name, body in BODIES.items()]


def _rows(tokenizer, tasks: list[Task]) -> list[tuple[list[int], list[int]]]:
    """(prompt ids as the RL step gives them, body ids + EOS) for every task and every body:
    the uniform prior's data."""
    from koda.data.tokenizer import EOS
    from koda.rl.step import prompt_ids

    return [(prompt_ids(tokenizer, t.prompt, 64), tokenizer.encode(body) + [EOS])
            for t in tasks for body in BODIES.values()]


def _batch(rows: list[tuple[list[int], list[int]]]) -> tuple[torch.Tensor, torch.Tensor]:
    """-> ids [N, T] (right-padded with PAD), body mask [N, T] float (1 on body and EOS tokens)."""
    from koda.data.tokenizer import PAD

    width = max(len(p) + len(b) for p, b in rows)
    ids = torch.full((len(rows), width), PAD, dtype=torch.long)
    mask = torch.zeros((len(rows), width))
    for i, (p, b) in enumerate(rows):
        ids[i, :len(p) + len(b)] = torch.tensor(p + b)
        mask[i, len(p):len(p) + len(b)] = 1.0
    return ids, mask


def prior_weights(tokenizer, model_cfg, steps: int = 40, seed: int = 5) -> dict[str, torch.Tensor]:
    """Full KODA-named weights of a model that writes each body with probability ~1/3 after
    every prompt: CE on the body tokens of all 3 x 3 (prompt, body) rows."""
    from koda.model import KodaForCausalLM

    torch.manual_seed(seed)
    model = KodaForCausalLM(model_cfg)
    ids, mask = _batch(_rows(tokenizer, arithmetic_tasks()))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        logp = torch.log_softmax(model(ids).float(), dim=-1)[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)
        loss = -(logp * mask[:, 1:]).sum() / mask.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class MemoPool:
    """A sandbox pool that runs each distinct (program, tests) pair once and replays its report.

    A few dozen steps of 24 rollouts hold a handful of distinct programs; judging each again
    would spend the test's time in the sandbox. Which report goes to which sample is still
    decided by the judge and the RL step (what the test checks); only repeats skip the run.
    The judge calls from its one thread, so the cache needs no lock."""

    def __init__(self, pool):
        self.pool, self.reports = pool, {}

    @property
    def workers(self) -> int:
        return self.pool.workers

    def map_tests(self, pairs, *, policy=None, batch: int = 1) -> list:
        pairs = list(pairs)
        new = list(dict.fromkeys(p for p in pairs if p not in self.reports))
        if new:
            self.reports |= dict(zip(new, self.pool.map_tests(new, policy=policy, batch=batch), strict=True))
        return [self.reports[p] for p in pairs]


def _is_body(text: str, task: Task) -> bool:
    """The completion is the task's right body, spaces aside: the pass the test counts. Read
    off the text, not the reward, so a reward given to the wrong sample cannot fake it."""
    return "".join(text.split()) == "".join(task.canonical_solution.split())


def _broadcast(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Collective: rank 0's tensors on every rank (the others pass zeros of the same shapes)."""
    for value in state.values():
        torch.distributed.broadcast(value, src=0)
    return state


def grpo_run(tokenizer: str, steps: int, lr: float = 1e-3, samples: int = 8, epochs: int = 4,
             prompts: int = 3, seed: int = 1) -> dict:
    """Collective: `steps` GRPO steps of the TINY actor (ZeRO-3 + AutoEP) from the uniform prior
    on the arithmetic tasks; per step, every sample's task, whether its text is that task's
    body (the pass the test counts, independent of the reward path) and its tests reward."""
    from koda.config.rl import RLConfig
    from koda.data.tokenizer import Tokenizer
    from koda.distributed import comm, ds_config
    from koda.model import KodaForCausalLM
    from koda.rl.engines import build_rl_engines, rl_plans
    from koda.rl.probe import heldout_probe
    from koda.rl.step import RLStep
    from koda.sandbox import SandboxPolicy, SandboxPool
    from tests.helpers.tiny import TINY

    tok, tasks = Tokenizer(tokenizer), arithmetic_tasks()
    if comm.rank() == 0:
        prior = prior_weights(tok, TINY)
    else:
        prior = {k: torch.zeros_like(v) for k, v in KodaForCausalLM(TINY).state_dict().items()}
    prior = _broadcast(prior)
    rl = RLConfig(prompts_per_step=prompts, samples_per_prompt=samples, max_new_tokens=8, temperature=1.0,
                  advantage="grpo", ppo_epochs=epochs, lce=0.0, lrl=1.0, lvw=0.0, kl_coef=0.0, judge_budget_s=0.5,
                  rewards={"tests": 1.0, "complexity": 0.0, "syntax": 0.0, "similarity": 0.0, "spectral": 0.0,
                           "poincare": 0.0})
    actor_ds = ds_config.load("zero3_ep_rl_smoke.json")
    actor_ds.pop("scheduler")                         # a constant rate: warm-up would spend the steps
    actor_ds["optimizer"]["params"]["lr"] = lr
    engines = build_rl_engines(TINY, rl_plans(actor_ds, TINY, comm.world_size(), train_steps=steps, rl=rl), rl,
                               initial=prior)
    records = []
    policy = SandboxPolicy(timeout_s=2.0, memory_mb=256, nproc=16)
    with SandboxPool(workers=1, policy=policy) as pool, RLStep(engines, tok, tasks, rl, seed=seed,
                                                                        pool=MemoPool(pool)) as step:
        rollouts = step._rollouts

        def recorded(chosen, *args):
            completions, rewards = rollouts(chosen, *args)
            per_sample = [t for t in chosen for _ in range(samples)]
            records.append([[t.task_id, _is_body(tok.decode(c.text_tokens), t), r.components["tests"]]
                            for t, c, r in zip(per_sample, completions, rewards, strict=True)])
            return completions, rewards

        step._rollouts = recorded

        def probe() -> dict:          # greedy, the three prompts split over the ranks
            return heldout_probe(engines.actor, tok, tasks, step.judge, max_new_tokens=8, max_len=TINY.max_seq_len)

        before = probe()
        metrics = [step.run(s) for s in range(steps)]
        after = probe()
    return {"rank": comm.rank(), "samples": records, "metrics": metrics, "probe": [before, after]}
