"""The solver process: the only place untrusted code runs.

It confines itself (solver uid, rlimits, clean environment, no inherited fds), loads the
solution, and then answers the judge's requests: call this function with these arguments,
get this attribute, iterate this object. It never sees the tests. Nothing it says is trusted:
the judge treats every reply as hostile input (``codec.decode``), so a solver that patches
builtins, ``json`` or this very module can only misreport *its own* return values, which is
no more than returning them.
"""

from __future__ import annotations

import _sitebuiltins
import builtins
import contextlib
import gc
import os
import sys
import traceback
from typing import TYPE_CHECKING

from koda.sandbox import codec, limits, namespaces, syscalls

if TYPE_CHECKING:  # the sandbox side gets the policy as a plain namespace (runner.py)
    from koda.sandbox.policy import SandboxPolicy

_SOLUTION_FILE = "solution.py"


def solver_main(policy: SandboxPolicy, layers: frozenset[str], workdir: str, req_fd: int,
                resp_fd: int) -> None:
    """Runs in a fresh fork; never returns. The first line on ``req_fd`` is the job."""
    code = 70
    syscalls.set_name('koda-solver')
    try:
        _confine(policy, layers, workdir, keep=(req_fd, resp_fd))
        reader = os.fdopen(req_fd, "rb", buffering=1 << 16)
        job = codec.loads(reader.readline())
        if job.get("quiet"):  # batches: output cannot be told apart per solution, so none is kept
            _to_devnull(1, 2)
        _write_files(job.get("files") or {}, job.get("stdin"))
        gc.enable()  # off in the harness processes (zygote.py); untrusted code gets normal Python
        if job["mode"] == "program":
            code = _run_program(job["source"], resp_fd)
        else:
            _serve(job["source"], reader, resp_fd)
            code = 0
    except BaseException:  # noqa: BLE001 - the judge reads the exit status, this only reports
        traceback.print_exc()
    _flush()
    os._exit(code)


def _confine(policy: SandboxPolicy, layers: frozenset[str], workdir: str, keep: tuple[int, ...]) -> None:
    os.setpgid(0, 0)  # its own group: the weaker mode (no separate uid) kills by group
    limits.close_inherited_fds(keep)
    namespaces.become("solver", layers)
    limits.no_new_privileges()
    limits.deny_keyrings()
    limits.apply_rlimits(policy, "solver")
    os.chdir(workdir)
    limits.set_environment(limits.clean_environment(workdir))
    sys.argv = [_SOLUTION_FILE]
    # the zygote runs without ``site``, which is what normally defines these two builtins
    builtins.exit = _sitebuiltins.Quitter("exit", "Ctrl-D (i.e. EOF)")
    builtins.quit = _sitebuiltins.Quitter("quit", "Ctrl-D (i.e. EOF)")


def _write_files(files: dict[str, str], stdin: str | None) -> None:
    for rel, text in files.items():
        os.makedirs(os.path.dirname(rel) or ".", exist_ok=True)
        with open(rel, "w", encoding="utf-8") as f:
            f.write(text)
    path = ".stdin"
    with open(path, "w", encoding="utf-8") as f:
        f.write(stdin or "")
    fd = os.open(path, os.O_RDONLY)
    os.dup2(fd, 0)
    os.close(fd)
    os.unlink(path)
    sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115 - lives as long as the process


def _to_devnull(*fds: int) -> None:
    null = os.open("/dev/null", os.O_WRONLY)
    for fd in fds:
        os.dup2(null, fd)
    os.close(null)


def _run_program(source: str, resp_fd: int) -> int:
    """``python solution.py`` semantics: exit code from SystemExit, 1 on an uncaught exception."""
    try:
        code = compile(source, _SOLUTION_FILE, "exec")
    except (SyntaxError, ValueError) as err:
        _send(resp_fd, {"syntax": _syntax_info(err)})
        traceback.print_exception(err, limit=0)
        return 1
    glb = {"__name__": "__main__", "__builtins__": builtins, "__file__": _SOLUTION_FILE}
    try:
        exec(code, glb)
    except SystemExit as exc:
        _flush()
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except MemoryError:
        _send(resp_fd, {"memory": True})
        traceback.print_exc()
        return 1
    except BaseException:  # noqa: BLE001 - a program's uncaught exception is its result
        traceback.print_exc()
        return 1
    return 0


def _serve(source: str, reader, resp_fd: int) -> None:
    try:
        code = compile(source, _SOLUTION_FILE, "exec")
    except (SyntaxError, ValueError) as err:
        _send(resp_fd, {"syntax": _syntax_info(err)})
        return
    glb = {"__name__": "solution", "__builtins__": builtins, "__file__": _SOLUTION_FILE}
    try:
        exec(code, glb)
    except BaseException as exc:  # noqa: BLE001 - even SystemExit at import is a load failure
        _send(resp_fd, {"load_error": _exc_info(exc)})
        return
    _send(resp_fd, {"ready": _names(glb)})
    table: dict[int, object] = {}

    def as_ref(value: object) -> codec.Ref:
        key = len(table)
        table[key] = value
        return codec.Ref(key, type(value).__name__)

    for line in reader:
        request = codec.loads(line)
        _send(resp_fd, {"id": request.get("id"), **_answer(request, glb, table, as_ref)})
        _flush()


def _answer(request: dict, glb: dict, table: dict, as_ref) -> dict:
    try:
        target = _resolve(codec.decode(request["target"]), glb, table)
        op = request["op"]
        if op == "call":
            args = [_resolve(a, glb, table) for a in codec.decode(request["args"])]
            kwargs = {k: _resolve(v, glb, table) for k, v in codec.decode(request["kwargs"]).items()}
            value = target(*args, **kwargs)
            # in-place changes to mutable arguments travel back so the judge can mirror them
            sync = {i: codec.encode(a, as_ref) for i, a in enumerate(args)
                    if type(a) in (list, dict, set, bytearray)}
            return {"ok": codec.encode(value, as_ref), "sync": sync}
        if op == "getattr":
            return {"ok": codec.encode(getattr(target, request["attr"]), as_ref)}
        if op == "iter":
            return {"ok": codec.encode(list(target), as_ref)}
        raise ValueError(f"unknown op {op!r}")
    except BaseException as exc:  # noqa: BLE001 - SystemExit, KeyboardInterrupt... are all reported
        return {"raise": _exc_info(exc)}


def _resolve(value, glb: dict, table: dict):
    if type(value) is codec.Name:
        if value.name not in glb:
            raise NameError(f"name {value.name!r} is not defined in the solution")
        return glb[value.name]
    if type(value) is codec.Ref:
        return table[value.key]
    return value


def _names(glb: dict) -> dict:
    """Top-level names the tests may use: callables by name, plain constants by value."""
    out = {}
    for name, value in list(glb.items()):
        if name.startswith("__") or type(value).__name__ == "module":
            continue
        if callable(value):
            out[name] = "call"
            continue
        try:
            out[name] = {"value": codec.encode(value)}
        except (codec.CodecError, RecursionError):
            continue
    return out


def _exc_info(exc: BaseException) -> dict:
    try:
        message = str(exc)[:2000]
    except BaseException:  # noqa: BLE001 - a hostile __str__
        message = "<unprintable>"
    t = type(exc)
    return {"type": t.__name__, "module": getattr(t, "__module__", ""), "msg": message,
            "base": not isinstance(exc, Exception)}


def _syntax_info(err: BaseException) -> dict:
    return {"msg": str(getattr(err, "msg", err)), "line": getattr(err, "lineno", None),
            "offset": getattr(err, "offset", None)}


def _send(fd: int, message: dict) -> None:
    data = codec.dumps(message)
    while data:
        data = data[os.write(fd, data):]


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(BaseException):  # a closed or replaced stream
            stream.flush()
