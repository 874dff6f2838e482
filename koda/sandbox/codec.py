"""Plain data across the judge/solver boundary: exact builtin types only, everything else a handle.

The judge compares values it *decoded itself*: whatever the solver sends, the judge builds
fresh ``int``/``str``/``list``/... objects, so an object with a rigged ``__eq__``, ``__hash__``
or ``__bool__`` can never reach a comparison. Encoding checks ``type(x) is ...`` (not
``isinstance``), so subclasses of builtins are handles too. Anything that is not plain data
(functions, class instances, generators) travels as an opaque reference the judge can only call,
ask an attribute of, or iterate, each through the solver again.

The wire format is JSON with tagged containers: lists are JSON arrays, other containers are
``{"#": tag, "v": ...}``. ``json`` parsing is safe on hostile input (no code runs), and decoding
accepts only these shapes.
"""

from __future__ import annotations

import json
import sys

TAGS = ("t", "s", "f", "d", "b", "c", "ba", "ref", "name")
MAX_DEPTH = 200


class CodecError(ValueError):
    """Malformed or non-plain data on the wire."""


class Ref:
    """An opaque handle for a non-plain value that stays in the solver."""

    __slots__ = ("key", "type_name")

    def __init__(self, key: int, type_name: str) -> None:
        self.key, self.type_name = key, type_name


class Name:
    """A reference to a top-level name of the solution module, resolved in the current solver."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


def encode(value, refs=None, depth: int = 0):
    """Value -> JSON-able tree. ``refs(value) -> Ref`` turns non-plain values into handles."""
    if depth > MAX_DEPTH:
        raise CodecError("value nested too deeply")
    t = type(value)
    if value is None or t is bool or t is int or t is float or t is str:
        return value
    d = depth + 1
    if t is list:
        return [encode(v, refs, d) for v in value]
    if t is tuple:
        return {"#": "t", "v": [encode(v, refs, d) for v in value]}
    if t is set or t is frozenset:
        return {"#": "s" if t is set else "f", "v": [encode(v, refs, d) for v in value]}
    if t is dict:
        return {"#": "d", "v": [[encode(k, refs, d), encode(v, refs, d)] for k, v in value.items()]}
    if t is bytes or t is bytearray:
        return {"#": "b" if t is bytes else "ba", "v": value.hex()}
    if t is complex:
        return {"#": "c", "v": [value.real, value.imag]}
    if t is Ref:
        return {"#": "ref", "v": [value.key, value.type_name]}
    if t is Name:
        return {"#": "name", "v": value.name}
    if refs is None:
        raise CodecError(f"{t.__name__} is not plain data")
    return encode(refs(value), None, depth)


def decode(tree, wrap=None, depth: int = 0):
    """JSON-able tree -> fresh builtin objects; rejects anything else.

    Handles become ``Ref``/``Name`` objects, passed through ``wrap`` when given (the judge turns
    them into callable proxies).
    """
    if depth > MAX_DEPTH:
        raise CodecError("value nested too deeply")
    t = type(tree)
    if tree is None or t is bool or t is int or t is float or t is str:
        return tree
    d = depth + 1
    if t is list:
        return [decode(v, wrap, d) for v in tree]
    if t is not dict or set(tree) != {"#", "v"} or tree["#"] not in TAGS:
        raise CodecError("malformed value")
    tag, v = tree["#"], tree["v"]
    try:
        if tag == "t":
            return tuple(decode(x, wrap, d) for x in v)
        if tag in ("s", "f"):
            items = [decode(x, wrap, d) for x in v]
            return set(items) if tag == "s" else frozenset(items)
        if tag == "d":
            return {decode(k, wrap, d): decode(x, wrap, d) for k, x in v}
        if tag in ("b", "ba"):
            return bytes.fromhex(v) if tag == "b" else bytearray.fromhex(v)
        if tag == "c":
            return complex(float(v[0]), float(v[1]))
        handle = Ref(int(v[0]), str(v[1])) if tag == "ref" else Name(str(v))
        return handle if wrap is None else wrap(handle)
    except (TypeError, ValueError) as err:  # unhashable key, bad hex, wrong arity, ...
        raise CodecError(f"malformed {tag!r} value: {err}") from None


def dumps(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def loads(line: bytes):
    try:
        return json.loads(line)
    except (ValueError, RecursionError) as err:
        raise CodecError(f"unreadable message: {err}") from None


def allow_big_ints() -> None:
    """Python 3.11 refuses to parse ints over 4300 digits; plain data may hold bigger ones."""
    if hasattr(sys, "set_int_max_str_digits"):
        sys.set_int_max_str_digits(0)
