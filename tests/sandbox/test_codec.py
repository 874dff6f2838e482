"""The judge/solver wire format: exact builtin types round-trip, everything else is refused."""

import math

import pytest

from koda.sandbox import codec


@pytest.mark.parametrize("value", [
    None, True, 0, pytest.param(-(10 ** 5000), id="bigint"), 1.5, math.inf, "é\ud800", [1, [2]], (1, (2,)),
    {1, 2}, frozenset({3}),
    {(1, 2): [3], "k": {"n": None}}, b"\x00\xff", bytearray(b"ab"), 2 + 3j,
])
def test_plain_values_round_trip_with_their_exact_types(value):
    codec.allow_big_ints()
    back = codec.decode(codec.loads(codec.dumps(codec.encode(value))))
    assert back == value and type(back) is type(value)


def test_nan_round_trips():
    assert math.isnan(codec.decode(codec.loads(codec.dumps(codec.encode(math.nan)))))


def test_subclasses_of_builtins_are_not_plain():
    class Int(int):
        pass

    with pytest.raises(codec.CodecError):
        codec.encode(Int(3))
    seen = []
    handle = codec.encode([Int(3)], refs=lambda v: seen.append(v) or codec.Ref(0, type(v).__name__))
    assert handle == [{"#": "ref", "v": [0, "Int"]}] and len(seen) == 1


@pytest.mark.parametrize("tree", [{"#": "zzz", "v": 1}, {"a": 1}, {"#": "d", "v": [[[1], 2]]},
                                  {"#": "b", "v": "not hex"}, {"#": "t", "v": 5}])
def test_malformed_trees_are_rejected(tree):
    with pytest.raises(codec.CodecError):
        codec.decode(tree)


def test_depth_is_bounded():
    deep = []
    for _ in range(codec.MAX_DEPTH + 5):
        deep = [deep]
    with pytest.raises(codec.CodecError):
        codec.encode(deep)
