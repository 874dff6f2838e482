"""Batches (several solutions judged in one sandbox): same verdicts, nothing carried across."""

from koda.sandbox import SandboxPolicy, SandboxPool

POLICY = SandboxPolicy(timeout_s=5)

LEAVE_TRACES = """
import ctypes, os, subprocess, time
def plant():
    open('note.txt', 'w').write('from the first solution')
    libc = ctypes.CDLL(None, use_errno=True)
    shm = libc.shmget(0x4B4F4441, 4096, 0o1666)          # a SysV shared-memory segment
    key = libc.syscall(248, b"user", b"koda-note", b"x", 1, -4)  # add_key to the user keyring
    child = subprocess.Popen(['sleep', '60'], start_new_session=True)  # leaves the process group
    for _ in range(500):  # until it has exec'd, so it shows as 'sleep'
        if open(f'/proc/{child.pid}/comm').read().strip() == 'sleep':
            break
        time.sleep(0.01)
    return [shm >= 0, key]
"""

FIND_TRACES = """
import ctypes, os
def look():
    libc = ctypes.CDLL(None, use_errno=True)
    procs = [p for p in os.listdir('/proc')
             if p.isdigit() and open(f'/proc/{p}/comm').read().strip() == 'sleep']
    return [sorted(os.listdir('.')), libc.shmget(0x4B4F4441, 4096, 0o666) >= 0,
            open('/proc/sysvipc/shm').read().count('\\n') - 1, procs]
"""


def test_nothing_of_one_solution_reaches_the_next_in_a_batch():
    with SandboxPool(workers=1) as pool:
        pairs = [(LEAVE_TRACES, "assert plant()[0] == True\nassert plant()[1] == -1\n"),
                 (FIND_TRACES, "assert look() == [[], False, 0, []]\n")]
        first, second = pool.map_tests(pairs, policy=POLICY, batch=2)
    # the first really did plant a file, a segment and a process; the keyring call was refused
    assert [t.status for t in first.tests] == ["passed", "passed"], first.tests
    assert second.passed == 1, second.tests


def test_batched_verdicts_match_single_runs_and_a_hang_hurts_only_itself():
    pairs = [("def f():\n    return 1", "assert f() == 1"),
             ("def f():\n    while True:\n        pass", "assert f() == 1"),
             ("def f():\n    return 2", "assert f() == 1"),
             ("import os\nos._exit(0)", "assert f() == 1"),
             ("def f():\n    return 1", "def test_a():\n    assert f() == 1\n"
                                        "def test_b():\n    assert f() != 1")]
    policy = SandboxPolicy(timeout_s=3)  # generous: only the hanging solution may time out
    with SandboxPool(workers=2) as pool:
        batched = pool.map_tests(pairs, policy=policy, batch=5)
        single = pool.map_tests(pairs, policy=policy)
    summary = [[t.status for t in r.tests] for r in batched]
    assert summary == [["passed"], ["timeout"], ["failed"], ["error"], ["passed", "failed"]]
    assert summary == [[t.status for t in r.tests] for r in single]


def test_the_trace_finder_does_see_traces_within_one_solution():
    # control for the batch test above: look() detects every trace plant() leaves
    tests = ("def test_both():\n    plant()\n"
             "    assert look()[:3] == [['note.txt'], True, 1] and len(look()[3]) == 1\n")
    with SandboxPool(workers=1) as pool:
        report = pool.run_tests(LEAVE_TRACES + FIND_TRACES, tests, policy=POLICY)
    assert report.passed == 1, report.tests
