"""Normalised Levenshtein similarity between two programs (rapidfuzz's C implementation).

Three views, because raw text rewards copying formatting: ``text`` compares the sources as
written; ``ast`` compares ``ast.unparse`` output, which drops comments and normalises
layout and quoting; ``tokens`` compares the token sequences (one edit per token, names
kept), which ignores spacing and is the least sensitive to identifier length.
Similarity is 1 - distance / max(len a, len b), in [0, 1]; 1 means identical.
"""

from __future__ import annotations

import ast
import io
import tokenize

from rapidfuzz.distance import Levenshtein

from koda.analysis.parse import parse_source

_SKIP = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
         tokenize.ENDMARKER, tokenize.ENCODING}


def _tokens(source: str) -> list[str]:
    out = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type not in _SKIP:
                out.append(tok.string)
    except (tokenize.TokenError, SyntaxError):
        pass  # a truncated program compares by the tokens it has
    return out


def _view(source: str, view: str) -> str | list[str]:
    if view == "text":
        return source
    if view == "tokens":
        return _tokens(source)
    if view == "ast":
        parsed = parse_source(source)
        return ast.unparse(parsed.tree) if parsed.ok else source  # unparsable: fall back to text
    raise ValueError(f"unknown similarity view {view!r}; use text, ast or tokens")


def levenshtein_similarity(a: str, b: str, view: str = "ast") -> float:
    """Normalised Levenshtein similarity in [0, 1] between programs ``a`` and ``b``."""
    return float(Levenshtein.normalized_similarity(_view(a, view), _view(b, view)))
