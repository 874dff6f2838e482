"""The library API other parts of KODA call: run_program and run_tests, basic contract."""

from koda.sandbox import SandboxPolicy, run_program, run_tests


def test_run_program_captures_stdout_stdin_and_exit_code():
    r = run_program("import sys\nprint(input().upper())\nsys.exit(3)", stdin="hello\n")
    assert (r.status, r.returncode, r.stdout) == ("error", 3, "HELLO\n")


def test_run_program_reads_files_and_imports_site_packages():
    r = run_program("import json, numpy\nprint(json.load(open('cfg.json'))['x'] + 1)",
                    files={"cfg.json": '{"x": 41}'})
    assert (r.status, r.stdout) == ("ok", "42\n"), r.stderr


def test_run_program_syntax_error():
    r = run_program("def f(:\n  pass")
    assert r.status == "syntax_error"


def test_run_tests_reports_each_assert_and_test_function():
    sol = "def add(a, b):\n    return a + b\n"
    tests = "assert add(1, 2) == 3\nassert add(2, 2) == 5\ndef test_neg():\n    assert add(-1, -1) == -2\n"
    rep = run_tests(sol, tests)
    assert [(t.name, t.status) for t in rep.tests] == [
        ("assert@1", "passed"), ("assert@2", "failed"), ("test_neg", "passed")]
    assert (rep.status, rep.passed, rep.total) == ("ok", 2, 3)
    assert rep.tests[1].message == "assert add(2, 2) == 5  (4 == 5 is false)"


def test_policy_rejects_bad_values_with_one_line_error():
    import pytest

    from koda.errors import ConfigError

    with pytest.raises(ConfigError, match="timeout_s -1"):
        SandboxPolicy(timeout_s=-1)


def test_programs_get_the_usual_builtins_and_module_semantics():
    r = run_program("import sys\nprint(__name__, sys.argv)\nexit(4)")
    assert (r.returncode, r.stdout) == (4, "__main__ ['solution.py']\n")
    sol = "def name():\n    return __name__\nif __name__ == '__main__':\n    input()"
    rep = run_tests(sol, "assert name() == 'solution'")
    assert rep.passed == 1, rep.tests
