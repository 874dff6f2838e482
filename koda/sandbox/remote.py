"""The judge's end of the judge/solver link: a session per solver process and proxies for its names.

Test code runs in the judge, where a call such as ``add(2, 3)`` reaches a ``Remote`` proxy that
sends the call to the solver and returns a value the judge decoded into fresh builtin objects.
A solver can therefore influence a test only through the values it returns; how it fails
(timeout, death by signal, exit, BaseException) becomes a ``Verdict``, a ``BaseException`` that
test code's ``except Exception`` does not swallow, and which the judge also remembers on the
session so a bare ``except:`` in a test cannot hide it either.
"""

from __future__ import annotations

import builtins
import os
import select
import socket
import time

from koda.sandbox import codec, spawner

MAX_MESSAGE = 64 << 20  # bytes in one solver reply; more is a hostile or runaway answer


class Verdict(BaseException):  # noqa: N818 - not an error of the judge, an outcome of the test
    """How the solver failed, decided by the judge; ``status`` is the per-test status."""

    def __init__(self, status: str, message: str, signal: int | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.signal = status, message, signal


class RemoteError(Exception):
    """The solution raised an exception of a type the judge does not have (e.g. its own class)."""


class Remote:
    """A solution object seen from the judge: callable, attributes and iteration, nothing else.

    Comparing, hashing or truth-testing one raises ``TypeError``: a test passes on plain data
    the judge built, never on an object whose behaviour the solution defines.
    """

    __slots__ = ("_session", "_target", "_generation")

    def __init__(self, session: SolverSession, target: codec.Ref | codec.Name) -> None:
        self._session, self._target, self._generation = session, target, session.generation

    def _handle(self) -> codec.Ref | codec.Name:
        if type(self._target) is codec.Ref and self._generation != self._session.generation:
            raise RuntimeError(f"{self!r} belongs to an earlier test's solver process")
        return self._target

    def __call__(self, *args, **kwargs):
        return self._session.request("call", self._handle(), args=args, kwargs=kwargs)

    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return self._session.request("getattr", self._handle(), attr=attr)

    def __iter__(self):
        return iter(self._session.request("iter", self._handle()))

    def _not_plain(self, *_):
        raise TypeError(f"{self!r} is not plain data (only int, float, str, bytes, bool, None, "
                        "list, tuple, dict, set and complex values are compared)")

    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = __bool__ = __hash__ = __len__ = _not_plain

    def __repr__(self) -> str:
        t = self._target
        return f"<solution {t.name}>" if type(t) is codec.Name else f"<solution {t.type_name} object>"


class SolverSession:
    """One solver process at a time, spawned through the spawner, talked to over two pipes."""

    def __init__(self, spawner: socket.socket, job: dict, single: bool = False, fresh: bool = False) -> None:
        self.spawner = spawner
        self.job = codec.dumps(job)  # what each solver reads first: mode, source, files, stdin
        self.single = single  # the spawner becomes the one solver (spawner.py); we reap it
        self.fresh = fresh  # a new solution in a batch: its first solver gets a new IPC namespace
        self._pid: int | None = None
        self.generation = 0
        self.deadline = float("inf")  # time.monotonic() value; set per test by the judge
        self.fatal: Verdict | None = None  # first verdict of the current test
        self.first: dict | None = None  # the solver's opening message (ready / syntax / load_error)
        self._pipes: tuple[int, int] | None = None
        self._buf = bytearray()
        self._seq = 0

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> dict:
        """Spawn a fresh solver that loads the solution; returns its opening message."""
        if self.single and self.generation:
            raise self._fail(Verdict("error", "the solver of this one-solver run is already gone"))
        req_r, req_w = os.pipe()
        resp_r, resp_w = os.pipe()
        kind = b"spawn-fresh" if self.fresh and not self.generation else b"spawn"
        socket.send_fds(self.spawner, [kind], [req_r, resp_w])
        os.close(req_r)
        os.close(resp_w)
        self._pid = int(self.spawner.recv(64))
        self._pipes, self._buf = (req_w, resp_r), bytearray()
        self.generation += 1
        self._write(self.job)
        self.first = self._read()
        return self.first

    def end(self, last: bool = False) -> int | None:
        """Kill the solver and everything it started; returns its wait status if it had one.

        ``last``: no solver follows in this run, so the spawner may leave the clean-up of
        stray processes to the end of the PID namespace (one fork less per run).
        """
        if self._pipes is None:
            return None
        for fd in self._pipes:
            os.close(fd)
        self._pipes = None
        if self.single:
            return spawner.reap_solver(self._pid)
        self.spawner.send(b"last" if last else b"end")
        reply = self.spawner.recv(64)
        return int(reply) if reply and reply != b"none" else None

    def ensure(self) -> dict:
        if self._pipes is None:
            self.start()
        assert self.first is not None
        return self.first

    # -- requests --------------------------------------------------------------------------
    def request(self, op: str, target, args=(), kwargs=None, attr: str | None = None):
        first = self.ensure()
        if "ready" not in first:
            raise self._fail(Verdict("error", "solution did not load"))
        self._seq += 1
        message: dict = {"id": self._seq, "op": op, "target": codec.encode(target)}
        if op == "call":
            message["args"] = codec.encode(list(args), self._outgoing)
            message["kwargs"] = codec.encode(dict(kwargs or {}), self._outgoing)
        if attr is not None:
            message["attr"] = attr
        self._write(codec.dumps(message))
        reply = self._read()
        if reply.get("id") != self._seq:
            raise self._fail(Verdict("error", "solver answered out of turn"))
        if "raise" in reply:
            raise self._remote_exception(reply["raise"])
        try:
            value = codec.decode(reply["ok"], self._wrap)
            for index, new in (reply.get("sync") or {}).items():
                _mirror(args[int(index)], codec.decode(new, self._wrap))
        except (codec.CodecError, KeyError, IndexError, ValueError, TypeError) as err:
            raise self._fail(Verdict("error", f"malformed reply from the solver: {err}")) from None
        return value

    def _outgoing(self, value):
        if type(value) is Remote:
            return value._handle()
        raise codec.CodecError(f"cannot pass a {type(value).__name__} to the solution (plain data only)")

    def _wrap(self, handle):
        return Remote(self, handle)

    def _remote_exception(self, info: dict) -> BaseException:
        name, msg = str(info.get("type")), str(info.get("msg"))
        if info.get("base"):
            return self._fail(Verdict("error", f"{name}: {msg}" if msg else name))
        cls = getattr(builtins, name, None)
        if info.get("module") == "builtins" and isinstance(cls, type) and issubclass(cls, Exception):
            try:
                exc = cls(msg)
            except Exception:  # noqa: BLE001 - exceptions whose constructor wants other arguments
                exc = RemoteError(f"{name}: {msg}")
        else:
            exc = RemoteError(f"{name}: {msg}")
        exc.koda_from_solution = name  # the judge reports it as the solution's error, not a failure
        return exc

    def _fail(self, verdict: Verdict) -> Verdict:
        if self.fatal is None:
            self.fatal = verdict
        return verdict

    # -- pipes -----------------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        assert self._pipes is not None
        view = memoryview(data)
        while view:
            self._wait(self._pipes[0], write=True)
            try:
                view = view[os.write(self._pipes[0], view):]
            except BrokenPipeError:
                raise self._died() from None

    def _read(self) -> dict:
        assert self._pipes is not None
        fd = self._pipes[1]
        while (end := self._buf.find(b"\n")) < 0:
            if len(self._buf) > MAX_MESSAGE:
                raise self._fail(Verdict("error", "solver reply exceeds the size limit"))
            self._wait(fd)
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                raise self._died()
            self._buf += chunk
        line, self._buf = bytes(self._buf[:end]), self._buf[end + 1:]
        message = codec.loads(line) if line else None
        if type(message) is not dict:
            raise self._fail(Verdict("error", "malformed message from the solver"))
        return message

    def _wait(self, fd: int, write: bool = False) -> None:
        remaining = self.deadline - time.monotonic()
        ready = select.select([], [fd], [], max(remaining, 0)) if write else select.select([fd], [], [],
                                                                                            max(remaining, 0))
        if not any(ready):
            raise self._fail(Verdict("timeout", "time limit exceeded"))

    def _died(self) -> Verdict:
        """The solver closed its pipe: ask the spawner how it ended."""
        status = self.end()
        if status is None:
            return self._fail(Verdict("crash", "solver vanished"))
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            kind = "timeout" if sig == 24 else "crash"  # SIGXCPU: the CPU-time rlimit
            return self._fail(Verdict(kind, f"solver killed by signal {sig}", signal=sig))
        return self._fail(Verdict("error", f"solver exited with code {os.waitstatus_to_exitcode(status)} "
                                           "before answering"))


def _mirror(original, new) -> None:
    """Apply the solver's in-place change of a mutable argument to the judge's copy."""
    if type(original) is not type(new):
        return
    if type(original) in (list, bytearray):
        original[:] = new
    elif type(original) in (dict, set):
        original.clear()
        original.update(new)
