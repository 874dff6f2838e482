"""Isolation layers: probed for real, named when missing, weaker mode only on request."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from koda.sandbox import ALL_LAYERS, IsolationError, SandboxPolicy, SandboxPool, layers, probe, run_program
from tests.sandbox.conftest import SAFE

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_this_host_offers_every_layer():
    # CI and development machines run as root with namespaces enabled; if this fails, the
    # message names what is missing and why
    assert probe().missing == {}
    assert set(probe().available) == set(ALL_LAYERS)


def test_each_layer_is_visible_from_inside():
    src = """
import os, socket
print('uid', os.getuid(), 'pid', os.getpid())
print('uid_map', open('/proc/self/uid_map').read().split())
print('root', sorted(os.listdir('/')))
print('ifaces', [l.split(':')[0].strip() for l in open('/proc/net/dev').readlines()[2:]])
try:
    open('/usr/koda-probe', 'w')
except OSError as e:
    print('usr', e.errno)
print('env', sorted(os.environ))
"""
    out = run_program(src, policy=SAFE).stdout.splitlines()
    assert out[0] == "uid 1000 pid 2"  # solver uid inside; PID 2 under the judge's PID 1
    # judge = 0 and solver = 1000 inside, both unprivileged ids outside (never host root)
    assert out[1] == "uid_map ['0', '2000000000', '1', '1000', '2000000001', '1']"
    assert "home" not in out[2] and "srv" not in out[2] and "var" not in out[2]  # a minimal root
    assert out[3] == "ifaces ['lo']"
    assert out[4] == "usr 30"  # EROFS
    assert out[5] == "env ['HOME', 'LANG', 'PATH', 'PYTHONDONTWRITEBYTECODE', 'PYTHONHASHSEED', 'TMPDIR']"


def test_missing_layer_is_named_and_refused(monkeypatch):
    monkeypatch.setattr(layers, "_cache", layers.Probe(
        available=tuple(n for n in ALL_LAYERS if n != "network_namespace"),
        missing={"network_namespace": "unshare(CLONE_NEWNET) failed: Operation not permitted"}))
    with pytest.raises(IsolationError, match="network_namespace: unshare"):
        layers.resolve(allow_weaker=False)
    assert "network_namespace" not in layers.resolve(allow_weaker=True)


def test_weaker_mode_runs_without_the_dropped_layers_and_says_so():
    fewer = frozenset(ALL_LAYERS) - {"mount_namespace", "readonly_root", "network_namespace"}
    before = {d for d in os.listdir("/tmp") if d.startswith("koda-sandbox-")}
    with SandboxPool(workers=1, layers=fewer) as pool:
        with pytest.raises(IsolationError, match="allow_weaker"):
            pool.run_tests("def f():\n    return 1", "assert f() == 1", policy=SAFE)
        weaker = SandboxPolicy(timeout_s=10, allow_weaker=True)
        report = pool.run_tests("import os\ndef f():\n    return os.getcwd()", "assert f() != '/tmp'",
                                policy=weaker)
    assert report.passed == 1, report.tests  # a private host directory instead of the tmpfs
    assert "network_namespace" not in report.isolation and "pid_namespace" in report.isolation
    after = {d for d in os.listdir("/tmp") if d.startswith("koda-sandbox-")}
    assert after <= before  # the host directory is removed afterwards


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux unshare")
def test_without_privileges_layers_are_named_and_weaker_mode_is_opt_in(tmp_path):
    # Inside `unshare -Ur` we are root only in a user namespace: a real host where most layers
    # are unavailable. Nothing here is simulated.
    (tmp_path / "sol.py").write_text("def add(a, b):\n    return a + b\n")
    (tmp_path / "tests.py").write_text("assert add(1, 2) == 3\nassert add(2, 2) == 5\n")
    cmd = ["unshare", "-Ur", sys.executable, "-m", "koda", "exec", "--solution", str(tmp_path / "sol.py"),
           "--tests", str(tmp_path / "tests.py"), "--json"]
    refused = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert refused.returncode == 2 and refused.stdout == ""
    assert "network_namespace: " in refused.stderr and "judge_separation: " in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    weaker = subprocess.run([*cmd, "--allow-weaker-isolation"], capture_output=True, text=True, timeout=120,
                            cwd=ROOT)
    assert weaker.returncode == 0, weaker.stderr
    report = json.loads(weaker.stdout)
    assert (report["passed"], report["total"]) == (1, 2)
    assert "network_namespace" not in report["isolation"] and "rlimits" in report["isolation"]
