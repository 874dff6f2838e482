"""``koda exec``: JSON contract, human table, one-line errors on unreadable input."""

import json
import subprocess
import sys

import pytest

from koda import cli

SOL = "def add(a, b):\n    return a + b\n"
TESTS = "assert add(1, 2) == 3\nassert add(2, 2) == 5\ndef test_neg():\n    assert add(-1, -1) == -2\n"


@pytest.fixture
def files(tmp_path):
    (tmp_path / "sol.py").write_text(SOL)
    (tmp_path / "tests.py").write_text(TESTS)
    return tmp_path


def test_json_output_has_the_contract_fields(files, capsys):
    argv = ["exec", "--solution", str(files / "sol.py"), "--tests", str(files / "tests.py"), "--timeout", "5",
            "--memory-mb", "256", "--json"]
    assert cli.main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["status"], out["passed"], out["total"]) == ("ok", 2, 3)
    assert [t["status"] for t in out["tests"]] == ["passed", "failed", "passed"]
    assert out["tests"][1]["message"] == "assert add(2, 2) == 5  (4 == 5 is false)"
    assert "network_namespace" in out["isolation"]


def test_human_table(files, capsys):
    assert cli.main(["exec", "--solution", str(files / "sol.py"), "--tests", str(files / "tests.py")]) == 0
    out = capsys.readouterr().out
    assert "assert@2  failed" in out and out.strip().endswith("2/3 passed  (run status: ok)")


@pytest.mark.parametrize("setup, expected", [
    (lambda d: None, "does not exist"),
    (lambda d: (d / "missing.py").mkdir(), "is a directory"),
    (lambda d: (d / "missing.py").write_bytes(b"x = '\xff'\n"), "is not UTF-8"),
])
def test_unreadable_solution_is_a_one_line_error(files, capsys, setup, expected):
    setup(files)
    argv = ["exec", "--solution", str(files / "missing.py"), "--tests", str(files / "tests.py"), "--json"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and "\n" not in err


def test_broken_tests_file_is_a_one_line_error(files, capsys):
    (files / "tests.py").write_text("assert (\n")
    assert cli.main(["exec", "--solution", str(files / "sol.py"), "--tests", str(files / "tests.py")]) == 2
    assert "tests file has a syntax error at line 1" in capsys.readouterr().err


def test_solution_syntax_error_is_a_result_not_an_error(files, capsys):
    (files / "sol.py").write_text("def add(a, b) return\n")
    argv = ["exec", "--solution", str(files / "sol.py"), "--tests", str(files / "tests.py"), "--json"]
    assert cli.main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["status"], out["passed"]) == ("syntax_error", 0)
    assert {t["status"] for t in out["tests"]} == {"syntax"}


def test_runs_as_a_command(files):
    argv = ["exec", "--solution", str(files / "sol.py"), "--tests", str(files / "tests.py"), "--json"]
    proc = subprocess.run([sys.executable, "-m", "koda", *argv], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["passed"] == 2
