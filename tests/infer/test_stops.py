"""Stop strings: where the completion is cut, including matches that begin in the prompt."""

from koda.data.tokenizer import Tokenizer
from koda.infer import GenerationConfig, complete
from koda.infer.stops import CODE_STOPS, StopStrings, find_stop
from tests.helpers.infer import tiny_model

BODY = "    return fib(n - 1) + fib(n - 2)\n"


def test_cut_at_the_earliest_stop_string():
    text = BODY + "\nprint(fib(3))\ndef other():\n    pass\n"
    assert find_stop(text, CODE_STOPS) == (len(BODY), "\nprint(")
    assert find_stop(BODY, CODE_STOPS) is None
    assert find_stop(BODY + "\n\n@cache\ndef g(): pass", CODE_STOPS) == (len(BODY) + 1, "\n@")


def test_nested_definitions_do_not_stop():
    nested = "    def helper(x):\n        return x\n    class Local:\n        pass\n"
    assert find_stop(nested, CODE_STOPS) is None


def test_a_match_may_begin_in_the_prompt_but_not_lie_inside_it():
    prompt = "def f(x):\n    return x\n"
    assert find_stop("def g():", CODE_STOPS, context=prompt[-9:]) == (0, "\ndef ")
    assert find_stop("    y = 1\n", ["\n    return"], context=prompt[-11:]) is None


def test_stop_strings_object_sees_the_prompt_tail():
    decode = lambda ids: "".join(chr(i) for i in ids)
    stops = StopStrings(["\nclass "], decode, ["x = 1\n", "y = 2"])
    assert stops(0, [ord(c) for c in "class A"])
    assert not stops(1, [ord(c) for c in "class A"])


def test_completion_text_is_cut_before_the_stop_string(tiny_data):
    tok = Tokenizer(tiny_data.tokenizer)
    model = tiny_model()
    prompt = "def add(a, b):\n"
    cfg = GenerationConfig(max_new_tokens=24)
    free = complete(model, tok, [prompt], cfg, stops=())[0]
    assert free.finish_reason in ("length", "eos") and free.stop is None
    stop = free.text[len(free.text) // 2:len(free.text) // 2 + 3]
    assert stop, free.text
    cut = complete(model, tok, [prompt], cfg, stops=[stop])[0]
    assert cut.finish_reason == "stop" and cut.stop == stop
    assert cut.text == free.text[:free.text.index(stop)]
    assert cut.token_ids == free.token_ids[:len(cut.token_ids)]
