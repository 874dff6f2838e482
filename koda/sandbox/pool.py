"""The parent side: zygote workers, job dispatch, output capture, and result assembly.

A ``SandboxPool`` keeps up to ``workers`` zygotes (one job at a time each) and feeds them from a
thread pool; the threads only wait on pipes, so the GIL is not the limit. Everything a
sandbox writes comes back through pipes this process created: the judge's result pipe (trusted,
see ``judge.py``) and stdout/stderr, which are kept up to ``output_bytes`` each and otherwise
read and dropped, so a flood neither fills memory nor blocks the writer.
"""

from __future__ import annotations

import os
import selectors
import socket
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from koda.errors import KodaError
from koda.sandbox import codec, filesystem, layers, testfile
from koda.sandbox.policy import SandboxPolicy
from koda.sandbox.results import ExecReport, ProgramResult, TestResult

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The zygote's whole environment: nothing from ours (no secrets, no PYTHON* surprises).
_ZYGOTE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}
_SLACK_S = 5.0  # beyond the sum of per-test timeouts before the whole sandbox is killed


class SandboxError(KodaError):
    """The sandbox itself failed (not the code in it): a setup step or a worker died."""


@dataclass(frozen=True, slots=True)
class _Outcome:
    messages: list[dict]
    report: dict
    stdout: str
    stderr: str
    truncated: bool
    duration_s: float


class _Zygote:
    def __init__(self, root_paths: list[str] | None) -> None:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # -S skips site (faster start, nothing imported behind our back); the environment's
        # site-packages are appended so solutions can import what the user's Python can.
        site = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
        boot = (f"import sys; sys.path.insert(0, {_ROOT!r}); sys.path += {site!r}; "
                f"from koda.sandbox import zygote; zygote.main({theirs.fileno()}, {root_paths!r})")
        self.proc = subprocess.Popen([sys.executable, "-S", "-s", "-B", "-c", boot], env=_ZYGOTE_ENV,
                                     pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)
        theirs.close()
        self.sock = mine

    def close(self) -> None:
        self.sock.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class SandboxPool:
    """Run many programs or solutions in parallel, each in its own fully isolated sandbox.

    Use as a context manager, or call ``close()``.
    """

    def __init__(self, workers: int | None = None, policy: SandboxPolicy | None = None,
                 layers: frozenset[str] | None = None) -> None:
        """``workers`` defaults to twice the CPUs: a run spends part of its time waiting on
        process hand-offs, and a second job per core fills those gaps.

        ``layers`` runs with only these isolation layers (the benchmark measures each layer's
        cost this way); dropping any available layer needs ``allow_weaker`` in the policy used."""
        self.workers = workers or 2 * (os.cpu_count() or 1)
        self.policy = policy or SandboxPolicy()
        self._only = None if layers is None else frozenset(layers)
        self._idle: list[_Zygote] = []
        self._all: list[_Zygote] = []
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="koda-sandbox")
        self.last_throughput: float | None = None  # runs per second of the last map_* call

    # -- public API --------------------------------------------------------------------------
    def run_program(self, source: str, *, policy: SandboxPolicy | None = None, stdin: str | None = None,
                    files: dict[str, str] | None = None) -> ProgramResult:
        policy = policy or self.policy
        job = {"mode": "program", "source": source, "stdin": stdin, "files": _check_files(files)}
        outcome = self._execute(job, policy, deadline_s=policy.timeout_s + _SLACK_S, solvers=1)
        return _program_result(outcome)

    def run_tests(self, solution: str, tests: str, *, policy: SandboxPolicy | None = None) -> ExecReport:
        policy = policy or self.policy
        items = _collect(tests)
        job = {"mode": "tests", "source": solution, "tests": tests, "files": {}, "stdin": None}
        deadline = (len(items) + 2) * (policy.timeout_s + 0.5) + _SLACK_S
        outcome = self._execute(job, policy, deadline_s=deadline, solvers=len(items))
        return _exec_report(outcome, items, self._layers(policy))

    def map_tests(self, pairs: Iterable[tuple[str, str]], *, policy: SandboxPolicy | None = None,
                  batch: int = 1) -> list[ExecReport]:
        """Judge many (solution, tests) pairs in parallel; sets ``last_throughput``.

        ``batch > 1`` judges that many solutions one after another in each sandbox, which
        saves the per-sandbox set-up (namespaces, mounts, judge and spawner processes). Each
        solution still gets its own solver processes, all killed before the next one starts, an
        emptied working directory, a fresh IPC namespace and no kernel keyrings
        (``runner._run_batch``); their stdout/stderr are not kept. A solution whose batch was cut
        short (the sandbox killed at its deadline) is judged again in a sandbox of its own.
        """
        pairs = list(pairs)
        if batch <= 1:
            return self._map(lambda p: self.run_tests(p[0], p[1], policy=policy), pairs)
        chunks = [pairs[i:i + batch] for i in range(0, len(pairs), batch)]
        done = self._map(lambda c: self._run_batch(c, policy or self.policy), chunks, count=len(pairs))
        return [report for chunk in done for report in chunk]

    def map_programs(self, sources: Iterable[str], *, policy: SandboxPolicy | None = None
                     ) -> list[ProgramResult]:
        return self._map(lambda s: self.run_program(s, policy=policy), list(sources))

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        with self._lock:
            for z in self._all:
                z.close()
            self._all, self._idle = [], []

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------------
    def _map(self, fn, items: list, count: int | None = None) -> list:
        start = time.perf_counter()
        results = list(self._executor.map(fn, items))
        elapsed = time.perf_counter() - start
        self.last_throughput = (len(items) if count is None else count) / elapsed if elapsed > 0 else None
        return results

    def _run_batch(self, pairs: list[tuple[str, str]], policy: SandboxPolicy) -> list[ExecReport]:
        collected = [_collect(tests) for _, tests in pairs]
        job = {"mode": "batch", "items": [{"source": s, "tests": t} for s, t in pairs]}
        deadline = sum((len(items) + 2) * (policy.timeout_s + 0.5) for items in collected) + _SLACK_S
        outcome = self._execute(job, policy, deadline_s=deadline, solvers=1 << 30)
        _setup_failure(outcome)
        used = self._layers(policy)
        reports = []
        for i, (solution, tests) in enumerate(pairs):
            mine = [m for m in outcome.messages if m.get("item") == i]
            if not any(m.get("done") for m in mine):  # cut short: judge it alone
                reports.append(self.run_tests(solution, tests, policy=policy))
                continue
            got = [TestResult(**m["test"]) for m in mine if "test" in m]
            reports.append(ExecReport.from_tests(got, isolation=sorted(used)))
        return reports

    def _layers(self, policy: SandboxPolicy) -> frozenset[str]:
        found = layers.resolve(policy.allow_weaker)
        if self._only is None:
            return found
        if found - self._only and not policy.allow_weaker:
            raise layers.IsolationError(f"layers {sorted(found - self._only)} left out without allow_weaker")
        return found & self._only

    def _take(self) -> _Zygote:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        # Zygotes stand in the minimal root when this pool uses it (every call then does: the
        # available layers do not change, allow_weaker only decides whether missing ones block).
        found = set(layers.probe().available) & (set(layers.ALL_LAYERS) if self._only is None else self._only)
        z = _Zygote(filesystem.host_paths() if "readonly_root" in found else None)
        with self._lock:
            self._all.append(z)
        return z

    def _give_back(self, z: _Zygote, healthy: bool) -> None:
        with self._lock:
            if healthy:
                self._idle.append(z)
                return
            self._all.remove(z)
        z.proc.kill()
        z.close()

    def _execute(self, job: dict, policy: SandboxPolicy, deadline_s: float, solvers: int) -> _Outcome:
        # ``solvers``: how many solver processes the run may need (one per test); it is not
        # secret (the count of tests), so the header may carry it through the zygote.
        header = {"policy": policy.to_dict(), "layers": sorted(self._layers(policy)), "solvers": solvers,
                  "deadline_s": deadline_s, "workdir": None}
        z = self._take()
        healthy = False
        try:
            outcome = _drive(z, header, codec.dumps(job), policy.output_bytes, deadline_s + _SLACK_S)
            healthy = True
            return outcome
        finally:
            self._give_back(z, healthy)


def _drive(z: _Zygote, header: dict, job: bytes, cap: int, hard_limit_s: float) -> _Outcome:
    """Hand one job to a zygote and pump its pipes until the zygote reports the end."""
    (job_r, job_w), (res_r, res_w), (out_r, out_w), (err_r, err_w) = (os.pipe() for _ in range(4))
    start = time.monotonic()
    try:
        socket.send_fds(z.sock, [codec.dumps(header)], [job_r, res_w, out_w, err_w])
    finally:
        for fd in (job_r, res_w, out_w, err_w):
            os.close(fd)
    streams = {res_r: bytearray(), out_r: bytearray(), err_r: bytearray()}
    limit = {res_r: 64 << 20, out_r: cap, err_r: cap}
    truncated, report, pending = False, None, memoryview(job)
    sel = selectors.DefaultSelector()
    os.set_blocking(job_w, False)
    sel.register(job_w, selectors.EVENT_WRITE)
    for fd in streams:
        sel.register(fd, selectors.EVENT_READ)
    sel.register(z.sock, selectors.EVENT_READ)
    open_fds = set(streams)
    report_at = None
    try:
        while open_fds or report is None:
            now = time.monotonic()
            if now - start > hard_limit_s:
                raise SandboxError("sandbox worker stopped responding")
            if report_at is not None and now - report_at > 0.5:
                break  # weaker mode: an escaped process may still hold a pipe open
            for key, _ in sel.select(timeout=0.1):
                fd = key.fd
                if fd == job_w:
                    try:
                        pending = pending[os.write(job_w, pending[:1 << 16]):]
                    except BrokenPipeError:
                        pending = memoryview(b"")
                    if not pending:
                        sel.unregister(job_w)
                        os.close(job_w)
                        job_w = -1
                elif fd == z.sock.fileno():
                    data = z.sock.recv(1 << 16)
                    if not data:
                        raise SandboxError("sandbox worker died")
                    report, report_at = codec.loads(data), time.monotonic()
                    sel.unregister(z.sock)
                else:
                    chunk = os.read(fd, 1 << 16)
                    if not chunk:
                        sel.unregister(fd)
                        open_fds.discard(fd)
                        continue
                    room = limit[fd] - len(streams[fd])
                    streams[fd] += chunk[:max(room, 0)]
                    truncated |= len(chunk) > room and fd != res_r
    finally:
        sel.close()
        for fd in [job_w, *streams]:
            if fd >= 0:
                os.close(fd)
    messages = [codec.loads(line) for line in bytes(streams[res_r]).splitlines() if line]
    return _Outcome(messages, report or {}, _text(streams[out_r]), _text(streams[err_r]), truncated,
                    time.monotonic() - start)


def _text(data: bytearray) -> str:
    return bytes(data).decode("utf-8", errors="replace")


def _collect(tests: str) -> list[testfile.TestItem]:
    try:
        return testfile.collect(tests)
    except SyntaxError as err:
        raise KodaError(f"tests file has a syntax error at line {err.lineno}: {err.msg}") from None


def _check_files(files: dict[str, str] | None) -> dict[str, str]:
    for rel in files or {}:
        parts = rel.split("/")
        if not rel or rel.startswith("/") or ".." in parts or "" in parts:
            raise KodaError(f"files: {rel!r} must be a relative path inside the working directory")
    return dict(files or {})


def _setup_failure(outcome: _Outcome) -> None:
    for m in outcome.messages:
        if "setup_error" in m:
            raise SandboxError(f"isolation layer {m['setup_error']} failed: {m['reason']}")
        if "internal_error" in m:
            raise SandboxError(f"sandbox judge failed: {m['internal_error']}")
    if "setup_error" in outcome.report:
        raise SandboxError(f"sandbox setup failed: {outcome.report['setup_error']}")


def _program_result(outcome: _Outcome) -> ProgramResult:
    _setup_failure(outcome)
    found = next((m["program"] for m in outcome.messages if "program" in m), None)
    if found is None:
        status = "timeout" if outcome.report.get("timed_out") else "crash"
        found = {"status": status, "returncode": None, "signal": None, "duration_s": outcome.duration_s}
    return ProgramResult(stdout=outcome.stdout, stderr=outcome.stderr, truncated=outcome.truncated, **found)


def _exec_report(outcome: _Outcome, items: list[testfile.TestItem], used: frozenset[str]) -> ExecReport:
    _setup_failure(outcome)
    got = [TestResult(**m["test"]) for m in outcome.messages if "test" in m]
    why = "timeout" if outcome.report.get("timed_out") else "crash"
    for item in items[len(got):]:
        got.append(TestResult(item.name, item.line, why, "the sandbox ended before this test finished"))
    return ExecReport.from_tests(got, stdout=outcome.stdout, stderr=outcome.stderr,
                                 truncated=outcome.truncated, duration_s=round(outcome.duration_s, 6),
                                 isolation=sorted(used))
