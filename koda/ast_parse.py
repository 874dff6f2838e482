"""``ast.parse`` that threads can share.

CPython 3.11 keeps the depth counter of its AST constructor in interpreter-wide state, not
per thread (python/cpython#106905), so two threads building ASTs at once can fail with
``SystemError: AST constructor recursion depth mismatch``. The RL stage judges on several
threads (``koda.rl.judging``'s and the sandbox pool's dispatchers both parse), and an RL run
died of it, so every KODA parse takes this lock. Parsing is a small share of judging: holding
the lock costs little. Standard library only: the sandbox's zygote imports it.
"""

from __future__ import annotations

import ast
import threading

_LOCK = threading.Lock()


def parse(source: str, filename: str = "<unknown>") -> ast.Module:
    """``ast.parse(source, filename)``, one thread at a time."""
    with _LOCK:
        return ast.parse(source, filename=filename)
