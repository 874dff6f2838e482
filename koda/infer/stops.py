"""Stop strings: end a completion where the generated code's function ends.

A model asked to complete a function keeps writing after the body (another function, a
``__main__`` block, test calls). The default set ends the completion at the next top-level
statement that starts something new; the text is cut just before the stop string.

Strings are matched on decoded text, not tokens, because one string can be split across
tokens in many ways. The match also sees the end of the prompt, so a prompt that ends in a
newline still stops at a completion that begins with ``def `` (but a stop string lying
wholly inside the prompt does not count).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

# A new top-level definition, decorator, main guard, or top-level test/driver code.
CODE_STOPS = ("\ndef ", "\nasync def ", "\nclass ", "\n@", "\nif __name__", "\nprint(", "\nassert ")


def find_stop(text: str, strings: Sequence[str], context: str = "") -> tuple[int, str] | None:
    """First stop string in `text` (which follows `context`) -> (cut position in `text`, string),
    or None. A match must end inside `text`; it may begin in `context`, then the cut is 0."""
    combined = context + text
    best: tuple[int, str] | None = None
    for s in strings:
        at = combined.find(s, max(0, len(context) - len(s) + 1))
        if at >= 0 and (best is None or at < best[0]):
            best = (at, s)
    if best is None:
        return None
    return max(0, best[0] - len(context)), best[1]


class StopStrings:
    """`should_stop` for ``generate``: decodes a prompt's completion and looks for the strings."""

    def __init__(self, strings: Sequence[str], decode: Callable[[list[int]], str], prompts: Sequence[str]):
        if any(not s for s in strings):
            raise ValueError("empty stop string")
        self.strings = tuple(strings)
        self.decode = decode
        longest = max(map(len, self.strings), default=1)
        self.contexts = [p[-(longest - 1):] if longest > 1 else "" for p in prompts]

    def __call__(self, prompt_index: int, generated: list[int]) -> bool:
        return bool(self.strings) and self.find(prompt_index, self.decode(generated)) is not None

    def find(self, prompt_index: int, text: str) -> tuple[int, str] | None:
        return find_stop(text, self.strings, self.contexts[prompt_index])
