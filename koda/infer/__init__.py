"""Inference: generate code from a KODA model (``koda generate``).

- ``config``: ``GenerationConfig``, the decoding settings.
- ``generate``: token ids in, ``Completion``s out; greedy, sampling, contrastive search,
  batched left-padded prompts, with or without the KV cache (``context``).
- ``sampling``, ``contrastive``: the choice of each token.
- ``stops``, ``complete``: text in, text out, cut at the end of the function.
- ``loading``: a standalone model directory or a training run.
- ``determinism``: the switches behind bit-identical reruns.
- ``verify``: judge samples with ``koda.sandbox`` and ``koda.analysis`` when installed.
- ``lockstep``: the decoding loop of rollouts, in step with the other ranks, returning ids,
  log-probabilities and masks (driven by ``koda.distributed.rollout``).
- ``benchmark``: tokens/s of the strategies on one model (``tools/bench_generate.py``).
"""

from koda.infer.complete import TextCompletion, complete
from koda.infer.config import GenerationConfig
from koda.infer.generate import Completion, generate

__all__ = ["Completion", "GenerationConfig", "TextCompletion", "complete", "generate"]
