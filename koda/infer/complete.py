"""Text in, text out: encode prompts, generate, decode, cut at stop strings.

This is the layer ``koda generate`` and the RL sampler call; ``generate`` below it works on
token ids only and knows nothing about text.

A prompt is fed as the start of a document: training streams separate documents with the
end-of-sequence token (``koda.data.preprocess``), so that token is what a file's first
token followed in training, and it goes in front of every prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from koda.data.tokenizer import EOS, PAD, Tokenizer
from koda.infer.config import GenerationConfig
from koda.infer.generate import generate
from koda.infer.stops import CODE_STOPS, StopStrings
from koda.model.transformer import KodaForCausalLM


@dataclass(frozen=True)
class TextCompletion:
    prompt: str
    text: str                  # the completion, cut just before the stop string when one matched
    token_ids: list[int]       # generated ids (through the token that completed a stop string)
    finish_reason: str         # "eos", "stop" or "length"
    stop: str | None = None    # the stop string that matched

    def to_json(self) -> dict:
        return asdict(self)


def complete(model: KodaForCausalLM, tokenizer: Tokenizer, prompts: Sequence[str], cfg: GenerationConfig,
             stops: Sequence[str] = CODE_STOPS) -> list[TextCompletion]:
    """Complete each prompt; `stops` ends a completion at the first of these strings."""
    ids = [[EOS, *tokenizer.encode(p)] for p in prompts]
    stopper = StopStrings(stops, tokenizer.decode, prompts)
    outputs = generate(model, ids, cfg, eos_id=EOS, pad_id=PAD, should_stop=stopper if stops else None)
    results = []
    for index, (prompt, out) in enumerate(zip(prompts, outputs, strict=True)):
        text = tokenizer.decode(out.token_ids)
        found = stopper.find(index, text) if out.finish_reason == "stop" else None
        if found is not None:
            text = text[:found[0]]
        results.append(TextCompletion(prompt, text, out.token_ids, out.finish_reason, found[1] if found else None))
    return results
