"""Hostile programs: each is contained, and the parent and the host are unharmed afterwards."""

import contextlib
import os
import socket
import sys
import threading
import time

import pytest

from koda.sandbox import SandboxPolicy, filesystem, run_program, run_tests
from tests.sandbox.conftest import FAST, SAFE


@pytest.mark.slow
def test_infinite_loop_is_killed_at_the_wall_clock(no_leftovers):
    start = time.monotonic()
    r = run_program("while True:\n    pass", policy=FAST)
    assert r.status == "timeout" and r.signal == 9
    assert time.monotonic() - start < FAST.timeout_s + 2


def _wall_bound(policy: SandboxPolicy) -> float:
    """Generous for a loaded machine, yet far below what a limit even 10x too long would take."""
    return policy.timeout_s * 3 + 2


@pytest.mark.slow
def test_ignoring_sigterm_does_not_help(no_leftovers):
    # a sleeper burns no CPU, so only the wall clock can end it (RLIMIT_CPU never fires); the
    # pool's own outer deadline would also end it, but seconds later: hence the elapsed check
    start = time.monotonic()
    r = run_program("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(60)",
                    policy=FAST)
    assert r.status == "timeout"
    assert time.monotonic() - start < _wall_bound(FAST)


def test_a_sleeping_test_is_stopped_at_the_per_test_wall_clock(no_leftovers):
    start = time.monotonic()
    report = run_tests("import time\ndef f():\n    time.sleep(60)",
                       "def test_sleeps():\n    f()\n", policy=FAST)
    assert [t.status for t in report.tests] == ["timeout"]
    assert time.monotonic() - start < _wall_bound(FAST)


def test_memory_bomb_hits_the_address_space_cap(no_leftovers):
    r = run_program("x = []\nwhile True:\n    x.append(bytearray(10**7))", policy=SAFE)
    assert r.status == "memory", r.stderr


def test_the_solver_gets_its_own_memory_cap_not_only_the_judges(no_leftovers):
    # The judge's cap (2 * memory_mb + 256 MB, limits.py) is inherited by every solver, so a
    # bomb that grows without end is stopped even without the solver's own cap. One block
    # between the two caps is not: only RLIMIT_AS at memory_mb turns it into "memory".
    policy = SandboxPolicy(timeout_s=10, memory_mb=128, nproc=16)
    over = run_program("x = bytearray(200 * 2**20)\nprint(len(x))", policy=policy)
    assert over.status == "memory", over.stdout + over.stderr
    under = run_program("x = bytearray(48 * 2**20)\nprint(len(x) >> 20)", policy=policy)
    assert (under.status, under.stdout) == ("ok", "48\n"), under.stderr  # the cap is not lower


@pytest.mark.slow
def test_fork_bomb_is_capped_and_fully_killed(no_leftovers):
    src = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    r = run_program(src, policy=FAST)
    assert r.status == "timeout"
    assert run_program("print('next run fine')", policy=SAFE).stdout == "next run fine\n"


def test_thread_bomb_is_capped(no_leftovers):
    src = ("import threading, time\nts = []\nwhile True:\n"
           "    t = threading.Thread(target=time.sleep, args=(30,)); t.start(); ts.append(t)")
    r = run_program(src, policy=SAFE)
    assert r.status == "error" and "can't start new thread" in r.stderr


def test_deep_recursion_through_c_crashes_by_signal(no_leftovers):
    # max(key=f) recurses through C frames, so the C stack overflows: a real SIGSEGV
    src = "import sys\nsys.setrecursionlimit(10**8)\ndef f(n):\n    return max([n + 1], key=f)\nf(0)"
    r = run_program(src, policy=SandboxPolicy(timeout_s=5, memory_mb=256))
    assert (r.status, r.signal) == ("crash", 11)


def test_segfault_is_a_crash(no_leftovers):
    r = run_program("import ctypes\nctypes.string_at(0)", policy=SAFE)
    assert (r.status, r.signal) == ("crash", 11)


@pytest.fixture
def canary():
    """A file under the interpreter's prefix: visible (read-only) inside the sandbox."""
    directory = os.path.join(sys.prefix, f".koda-canary-{os.getpid()}")
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "canary.txt")
    with open(path, "w") as f:
        f.write("original")
    yield path
    os.remove(path)
    os.rmdir(directory)


def test_files_outside_the_workdir_survive_direct_and_child_process_attacks(canary, no_leftovers):
    src = f"""
import os, shutil, subprocess
p = {canary!r}
print(open(p).read())
for attack in (lambda: open(p, 'w').write('pwned'), lambda: os.remove(p), lambda: os.rename(p, p + '.x'),
               lambda: os.chmod(p, 0o777), lambda: shutil.rmtree(os.path.dirname(p))):
    try:
        attack()
        print('attack succeeded')
    except OSError as e:
        print(type(e).__name__)
subprocess.run(['sh', '-c', 'echo pwned > ' + p + '; rm -f ' + p], stderr=subprocess.DEVNULL)
subprocess.run([__import__('sys').executable, '-c', 'import os; os.remove(' + repr(p) + ')'],
               stderr=subprocess.DEVNULL)
"""
    r = run_program(src, policy=SandboxPolicy(timeout_s=10))
    assert r.stdout.startswith("original\n"), r.stderr  # it could see the file...
    assert "attack succeeded" not in r.stdout
    with open(canary) as f:
        assert f.read() == "original"  # ...but not change it, directly or through a child


def test_host_tmp_is_invisible_and_the_workdir_is_private(tmp_path, no_leftovers):
    secret = tmp_path / "host-secret.txt"
    secret.write_text("host data")
    r = run_program(f"import os\nprint(os.path.exists({str(secret)!r}))\nopen('left.txt', 'w').write('x')\n"
                    "print(os.getcwd())", policy=SAFE)
    workdir = filesystem.workdir_for(filesystem.host_paths())
    assert r.stdout == f"False\n{workdir}\n", r.stderr
    again = run_program("import os\nprint(os.path.exists('left.txt'))", policy=SAFE)
    assert again.stdout == "False\n"  # every run starts with an empty working directory


def test_no_network_even_to_a_listener_on_this_machine(no_leftovers):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(3)
    port = server.getsockname()[1]
    accepted = []

    def accept():
        with contextlib.suppress(OSError):
            accepted.append(server.accept())

    thread = threading.Thread(target=accept)
    thread.start()
    src = (f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
           "    print('connected')\nexcept OSError as e:\n    print('refused', e.errno)\n"
           "print(open('/proc/net/dev').read().count(':'))")
    r = run_program(src, policy=SandboxPolicy(timeout_s=5))
    thread.join()
    server.close()
    assert accepted == []
    assert r.stdout.startswith("refused"), r.stdout + r.stderr
    assert r.stdout.splitlines()[1] == "1"  # the only interface is lo


def test_environment_secrets_do_not_reach_the_sandbox(monkeypatch, no_leftovers):
    from koda.sandbox import SandboxPool

    secret = "koda-test-secret-93f1c2"
    monkeypatch.setenv("KODA_TEST_SECRET", secret)
    src = ("import os, glob\nprint(dict(os.environ))\n"
           "for p in glob.glob('/proc/*/environ'):\n    try:\n        print(open(p).read())\n"
           "    except OSError:\n        pass")
    with SandboxPool(workers=1) as pool:  # started after the secret was set
        r = pool.run_program(src, policy=SAFE)
    assert r.status == "ok", r.stderr
    assert secret not in r.stdout + r.stderr and "KODA_TEST_SECRET" not in r.stdout


def test_killing_the_parent_or_everything_fails(no_leftovers):
    src = ("import os, signal, subprocess\n"
           "for pid in (os.getppid(), 1):\n    try:\n        os.kill(pid, signal.SIGKILL)\n"
           "    except OSError as e:\n        print(pid, type(e).__name__, flush=True)\n"
           "subprocess.run(['kill', '-9', '-1'])\nprint('kill -1 missed me')")
    r = run_program(src, policy=SAFE)
    assert r.stdout.count("PermissionError") == 2, r.stdout + r.stderr
    # kill -9 -1 reaches only the solver's own processes, itself included: the judge survives
    # to report how the program ended
    assert (r.status, r.signal) == ("crash", 9)
    assert os.getppid() > 1  # this test process and its parent are alive
    assert run_program("print(1)", policy=SAFE).stdout == "1\n"  # and so is the pool


def test_huge_output_is_capped_and_drained(no_leftovers):
    policy = SandboxPolicy(timeout_s=10, output_bytes=1 << 16)
    r = run_program("import sys\nfor _ in range(800):\n    sys.stdout.write('x' * 65536)\nprint('end')",
                    policy=policy)
    assert r.status == "ok" and r.truncated
    assert len(r.stdout) == 1 << 16


def test_only_standard_fds_and_the_solver_pipes_are_open(no_leftovers):
    r = run_program("import os\nprint(len(os.listdir('/proc/self/fd')))", policy=SAFE)
    assert int(r.stdout) <= 6  # 0, 1, 2, the two judge<->solver pipes, and listdir's own fd
