"""What a sandboxed run returns: typed records with a stable JSON form (the ``koda exec`` contract)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

PROGRAM_STATUSES = ("ok", "timeout", "memory", "crash", "error", "syntax_error")
TEST_STATUSES = ("passed", "failed", "error", "timeout", "memory", "crash", "syntax")
# A run's status is "ok" when every test reached a verdict of its own (passed or failed);
# otherwise the first of these that some test hit, in this order.
_RUN_PRECEDENCE = (("syntax", "syntax_error"), ("timeout", "timeout"), ("memory", "memory"),
                   ("crash", "crash"), ("error", "error"))


@dataclass(frozen=True, slots=True)
class ProgramResult:
    """One program run as ``__main__``. ``signal`` is set when a signal killed it."""

    status: str  # one of PROGRAM_STATUSES
    returncode: int | None
    signal: int | None
    stdout: str
    stderr: str
    duration_s: float
    truncated: bool  # stdout or stderr went past the policy's output_bytes

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class TestResult:
    name: str  # "test_foo" or "assert@12"
    line: int
    status: str  # one of TEST_STATUSES
    message: str = ""  # the failing assert, or "ExceptionType: message", or why it was killed
    signal: int | None = None
    duration_s: float = 0.0


@dataclass(frozen=True, slots=True)
class ExecReport:
    """Per-test results of one solution against one tests file."""

    status: str  # one of PROGRAM_STATUSES, see run_status()
    passed: int
    total: int
    tests: list[TestResult]
    stdout: str = ""
    stderr: str = ""
    truncated: bool = False
    duration_s: float = 0.0
    isolation: list[str] = field(default_factory=list)  # the layers this run had

    @classmethod
    def from_tests(cls, tests: list[TestResult], **rest) -> ExecReport:
        passed = sum(t.status == "passed" for t in tests)
        return cls(status=run_status(tests), passed=passed, total=len(tests), tests=tests, **rest)

    def to_json(self) -> dict:
        return asdict(self)


def run_status(tests: list[TestResult]) -> str:
    for test_status, status in _RUN_PRECEDENCE:
        if any(t.status == test_status for t in tests):
            return status
    return "ok"
