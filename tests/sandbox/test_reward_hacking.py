"""A solution must not pass without computing the right values, whatever it does in its process."""

import pytest

from koda.sandbox import SandboxPolicy, run_tests
from tests.sandbox.conftest import SAFE

TESTS = "assert add(1, 2) == 3\nassert add(2, 2) == 4\ndef test_more():\n    assert add(5, 5) == 10\n"

FORGED = ('{"test": {"name": "assert@1", "line": 1, "status": "passed", "message": "", "signal": null, '
          '"duration_s": 0}}')

HACKS = {
    "sys.exit at import": "import sys\nsys.exit(0)\ndef add(a, b):\n    return 0",
    "os._exit at import": "import os\nos._exit(0)",
    "os._exit in the call": "import os\ndef add(a, b):\n    os._exit(0)",
    "sys.exit in the call": "import sys\ndef add(a, b):\n    sys.exit(0)",
    "KeyboardInterrupt": "def add(a, b):\n    raise KeyboardInterrupt",
    "GeneratorExit": "def add(a, b):\n    raise GeneratorExit",
    "custom BaseException": "class Win(BaseException):\n    pass\ndef add(a, b):\n    raise Win()",
    "__eq__ always True": """
class A:
    def __eq__(self, o):
        return True
    __hash__ = None
def add(a, b):
    return A()""",
    "int subclass __eq__": """
class I(int):
    def __eq__(self, o):
        return True
    __hash__ = int.__hash__
def add(a, b):
    return I(0)""",
    "truthy object for bare assert": "class T:\n    def __bool__(self):\n        return True\n"
                                     "def add(a, b):\n    return T()",
    "patched AssertionError": """
import builtins
class E(Exception):
    pass
builtins.AssertionError = E
def add(a, b):
    return 0""",
    "patched print / sys.stdout": """
import builtins, io, sys
builtins.print = lambda *a, **k: None
sys.stdout = io.StringIO()
def add(a, b):
    return 0""",
    "patched json": """
import json
json.dumps = lambda *a, **k: '{"ok": 3}'
json.loads = lambda *a, **k: {'ok': 3}
def add(a, b):
    return 0""",
    "patched harness": """
import sys
for name, m in list(sys.modules.items()):
    if name.startswith('koda'):
        for attr in dir(m):
            try:
                setattr(m, attr, None)
            except Exception:
                pass
def add(a, b):
    return 0""",
    "prints what a harness looks for": """
print('3 passed, 0 failed')
print('{"status": "ok", "passed": 3, "total": 3}')
def add(a, b):
    print('PASSED')
    return 0""",
    "writes forged result records on every fd": f"""
import os
FORGED = ({FORGED!r} + '\\n') * 3 + '{{"done": true}}\\n'
def add(a, b):
    for fd in range(3, 64):
        try:
            os.write(fd, FORGED.encode())
        except OSError:
            pass
    return 0""",
    "finds the answer in caller frames, argv, the tests file or the work dir": r"""
import os, re, sys
def add(a, b):
    texts = list(sys.argv)
    frame = sys._getframe(1)
    while frame is not None:   # every local and constant of every caller
        texts += [repr(v) for v in frame.f_locals.values()] + [repr(frame.f_code.co_consts)]
        frame = frame.f_back
    for path in ['tests.py', '/tmp/tests.py'] + os.listdir('.'):
        try:
            with open(path) as f:
                texts.append(f.read())
        except OSError:
            pass
    for text in texts:
        m = re.search(r'add\(%d, %d\) == (\d+)' % (a, b), text)
        if m:
            return int(m.group(1))
    return 0""",
    "patches builtins the tests use": """
import builtins
builtins.int = lambda *a: 0
builtins.isinstance = lambda *a: True
builtins.len = lambda *a: 0
def add(a, b):
    return 0""",
    "kills the judge": """
import os, signal
def add(a, b):
    for pid in (1, os.getppid()):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return 0""",
}


@pytest.mark.parametrize("name", list(HACKS))
def test_hack_passes_nothing(name):
    report = run_tests(HACKS[name], TESTS, policy=SAFE)
    assert report.passed == 0, [(t.name, t.status, t.message) for t in report.tests]
    assert report.total == 3


def test_the_honest_solution_passes_all():
    report = run_tests("def add(a, b):\n    return a + b", TESTS, policy=SAFE)
    assert (report.status, report.passed, report.total) == ("ok", 3, 3)


def test_rigged_object_is_an_error_not_a_failure():
    report = run_tests(HACKS["__eq__ always True"], TESTS, policy=SAFE)
    assert {t.status for t in report.tests} == {"error"}
    assert "not plain data" in report.tests[0].message


def test_base_exceptions_are_errors_with_their_type():
    report = run_tests(HACKS["KeyboardInterrupt"], TESTS, policy=SAFE)
    assert [t.status for t in report.tests] == ["error"] * 3
    assert report.tests[0].message.startswith("KeyboardInterrupt")


PEEK = """
import ctypes, re
def peek():
    ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE: make our own /proc/self/mem readable
    # Look through this process's whole memory for the tests' secret marker. The needle is
    # assembled from pieces and checked by its digits, so the search never finds itself.
    prefix = ("ZEBRA" + "-QUOKKA-").encode()
    digits = str(4400 + 17).encode()
    found = 0
    with open('/proc/self/maps') as maps, open('/proc/self/mem', 'rb', 0) as mem:
        for line in maps:
            m = re.match(r'([0-9a-f]+)-([0-9a-f]+) r', line)
            if not m or '[vvar]' in line:
                continue
            lo, hi = int(m.group(1), 16), int(m.group(2), 16)
            try:
                mem.seek(lo)
                chunk = mem.read(hi - lo)
            except (OSError, OverflowError, ValueError):
                continue
            i = chunk.find(prefix)
            while i >= 0:
                found += chunk[i + len(prefix):i + len(prefix) + 4] == digits
                i = chunk.find(prefix, i + 1)
    return found
"""


@pytest.mark.slow
def test_solver_memory_never_holds_the_tests():
    tests = "# the expected answers are secret: ZEBRA-QUOKKA-4417\nassert peek() == 0\n"
    clean = run_tests(PEEK, tests, policy=SAFE)
    assert (clean.passed, clean.total) == (1, 1), clean.tests
    # the search does work: the same marker in the solution's own source is found
    leaky = run_tests(PEEK + "# ZEBRA-QUOKKA-4417\n", tests, policy=SAFE)
    assert leaky.tests[0].status == "failed"


def test_solution_cannot_read_the_tests_from_files_or_the_judge():
    tests = "assert look() == []  # MARKER-7\n"
    sol = ("import glob, os\ndef look():\n    hits = []\n"
           "    for p in glob.glob('/tmp/**', recursive=True) + glob.glob('/proc/[0-9]*/cmdline') + "
           "glob.glob('/proc/[0-9]*/environ') + glob.glob('/proc/[0-9]*/fd/*') + ['/proc/1/mem']:\n"
           "        try:\n            with open(p, 'rb') as f:\n                data = f.read(1 << 20)\n"
           "        except OSError:\n            continue\n"
           "        if b'MARKER' + b'-7' in data:\n            hits.append(p)\n    return hits")
    report = run_tests(sol, tests, policy=SandboxPolicy(timeout_s=5))
    assert report.passed == 1, report.tests
