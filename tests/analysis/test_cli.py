import json

import textbook as tb

from koda import cli


def test_verify_json_has_the_contract_fields(tmp_path, capsys):
    path = tmp_path / "fib.py"
    path.write_text(tb.FIB + tb.MERGE_SORT)
    assert cli.main(["verify", str(path), "--function", "fib", "--json", "--no-measure"]) == 0
    out = json.loads(capsys.readouterr().out)
    for field in ("function", "recurrence", "bound", "bound_text", "empirical", "agree", "betti",
                  "laplacian_spectrum_summary"):
        assert field in out
    assert out["function"] == "fib" and out["bound"]["kind"] == "exponential"
    assert out["recurrence"] == "T(n) = T(n-1) + T(n-2) + Θ(1)"
    assert out["agree"] is False and out["empirical"] is None  # not measured
    assert out["betti"]["beta0"] == 1 and out["betti"]["consistent"] is True


def test_undecided_prints_null_bound(tmp_path, capsys):
    path = tmp_path / "q.py"
    path.write_text(tb.QUICKSORT)
    assert cli.main(["verify", str(path), "--json", "--no-measure"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["bound"] is None and out["bound_text"] is None and out["undecided_reason"]


def test_unreadable_input_is_one_line_and_exit_2(tmp_path, capsys):
    assert cli.main(["verify", str(tmp_path / "missing.py"), "--json"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("koda verify: error: cannot read") and "\n" not in err
    bad = tmp_path / "bad.py"
    bad.write_text("def f(n):\n    return (n +\n")
    assert cli.main(["verify", str(bad), "--json"]) == 2
    err = capsys.readouterr().err.strip()
    assert ":3:0: program is cut off" in err and "\n" not in err
    nofunc = tmp_path / "x.py"
    nofunc.write_text(tb.FIB)
    assert cli.main(["verify", str(nofunc), "--function", "nope", "--no-measure"]) == 2
    assert "no function 'nope'" in capsys.readouterr().err
