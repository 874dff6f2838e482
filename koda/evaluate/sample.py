"""Completions from one standalone model (one process, no DeepSpeed): n per task.

Sample j of every task is drawn in pass j with generation seed ``seed + j``; within a pass
the tasks go in chunks of ``batch`` prompts, and each prompt row has its own generator
(``koda.infer.sampling.row_seed``), so a run is reproducible for the same seed and batch.
Temperature 0 means greedy decoding, which gives one completion per task. A batch generates
at most ``max_new_tokens``, fewer when its longest prompt leaves less room under the model's
``max_seq_len``.
"""

from __future__ import annotations

from koda.errors import KodaError
from koda.tasks.schema import Task

# Enough for every held-out reference plus its end of text: the longest of the 72 default
# held-out references is 228 tokens with the default tokenizer (stdlib, vocab 4096) and 312
# with the test suite's vocab-512 one; 64 cut 34 of the 72 short, so a perfect model failed them.
MAX_NEW_TOKENS = 384


def sample_model(model, tokenizer, tasks: list[Task], n: int, temperature: float, seed: int,
                 max_new_tokens: int = MAX_NEW_TOKENS, batch: int = 32, top_p: float = 1.0) -> list[dict]:
    """-> [{"task_id", "completion", "sample", "finish_reason"}], task-major (all of a task's samples together)."""
    from koda.infer.complete import complete
    from koda.infer.config import GenerationConfig
    from koda.infer.stops import CODE_STOPS

    if n < 1:
        raise KodaError(f"--n must be >= 1, got {n}")
    if temperature < 0:
        raise KodaError(f"--temperature must be >= 0, got {temperature}")
    if temperature == 0 and n > 1:
        raise KodaError(f"--temperature 0 is greedy decoding, one completion per task; got --n {n}")
    if batch < 1:
        raise KodaError(f"--batch must be >= 1, got {batch}")
    limit = model.cfg.max_seq_len
    lengths = [len(tokenizer.encode(t.prompt)) + 1 for t in tasks]  # + the end-of-sequence token in front
    too_long = [t.task_id for t, m in zip(tasks, lengths, strict=True) if m >= limit]
    if too_long:
        raise KodaError(f"{len(too_long)} prompt(s) leave no room under the model's max_seq_len {limit} "
                        f"(first: {too_long[0]})")
    by_task: list[list[dict]] = [[] for _ in tasks]
    for j in range(n):
        for start in range(0, len(tasks), batch):
            chunk = tasks[start:start + batch]
            room = min(max_new_tokens, limit - max(lengths[start:start + batch]))
            cfg = (GenerationConfig(strategy="greedy", max_new_tokens=room) if temperature == 0 else
                   GenerationConfig(strategy="sample", max_new_tokens=room, temperature=temperature,
                                    top_p=top_p, seed=seed + j))
            for i, r in enumerate(complete(model, tokenizer, [t.prompt for t in chunk], cfg, CODE_STOPS)):
                by_task[start + i].append({"task_id": chunk[i].task_id, "completion": r.text, "sample": j,
                                           "finish_reason": r.finish_reason})
    return [s for group in by_task for s in group]
