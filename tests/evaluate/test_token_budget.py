"""The default generation budget leaves room for every held-out reference: a model that writes
the reference must not be cut short and fail its tests."""

from koda.data.tokenizer import EOS, Tokenizer
from koda.evaluate.sample import MAX_NEW_TOKENS, sample_model
from koda.tasks import build_tasks


def test_default_budget_covers_every_heldout_reference(tiny_data):
    # the test suite's vocab-512 tokenizer: a smaller vocabulary spends more tokens than the
    # default vocab-4096 one, so this bounds the default tokenizer's counts too
    tok = Tokenizer(tiny_data.tokenizer)
    held = [t for t in build_tasks(seed=0, train=0, heldout=3) if t.split == "heldout"]
    longest = max(len(tok.encode(t.canonical_solution)) + 1 for t in held)   # + the end of text
    assert tok.vocab_size > EOS and longest <= MAX_NEW_TOKENS, longest
    assert sample_model.__defaults__[0] == MAX_NEW_TOKENS
    from koda.evaluate.cli import _parser

    assert _parser().parse_args(["--model", "m"]).max_new_tokens == MAX_NEW_TOKENS
