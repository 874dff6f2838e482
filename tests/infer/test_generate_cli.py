"""``koda generate`` end to end on a standalone TINY model, and its one-line errors."""

import json
import sys

from koda import cli


def _run(capsys, *argv):
    code = cli.main(["generate", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_output_for_one_prompt(capsys, standalone_dir):
    code, out, err = _run(capsys, "--model", str(standalone_dir), "--prompt", "def f(x):\\n", "--json",
                          "--max-new-tokens", "6", "--stop")
    assert code == 0, err
    result = json.loads(out)
    (sample,) = result["samples"]
    assert sample["prompt"] == "def f(x):\n" and sample["finish_reason"] in ("length", "eos")
    assert len(sample["token_ids"]) == sample["new_tokens"] <= 6
    assert result["settings"]["strategy"] == "greedy" and result["stops"] == []
    assert result["determinism"]["deterministic_algorithms"] is True


def test_prompts_file_with_contrastive_search_in_text_mode(capsys, standalone_dir, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "def add(a, b):\n", "id": "add"}) + "\n\n"
                       + json.dumps({"prompt": "class Stack:\n"}) + "\n")
    code, out, err = _run(capsys, "--model", str(standalone_dir), "--prompts-file", str(prompts),
                          "--strategy", "contrastive", "--k", "3", "--alpha", "0.5", "--max-new-tokens", "5")
    assert code == 0, err
    assert "=== add (" in out and "=== 1 (" in out and "tokens/s]" in out


def test_user_errors_are_one_line_and_exit_2(capsys, standalone_dir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x"}\n{"text": "no prompt"}\n')
    cases = [
        (["--model", str(tmp_path / "nope"), "--prompt", "x"], "no such directory"),
        (["--model", str(standalone_dir), "--prompts-file", str(bad)], "bad.jsonl:2: needs a string 'prompt'"),
        (["--model", str(standalone_dir), "--prompt", "x", "--top-p", "0"], "top_p must be in (0, 1]"),
        (["--model", str(standalone_dir), "--prompt", "x", "--stop", ""], "empty stop string"),
        (["--model", str(standalone_dir), "--prompt", "x", "--max-new-tokens", "500"], "max_seq_len 64"),
        (["--model", str(standalone_dir), "--prompt", "x", "--verify-budget", "0"], "--verify-budget 0.0 must be"),
    ]
    for argv, message in cases:
        code, _, err = _run(capsys, *argv)
        assert code == 2 and message in err and err.count("\n") == 1, (argv, err)


def test_verify_without_the_judges_says_what_is_missing(capsys, standalone_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "koda.sandbox", None)      # None in sys.modules: ImportError
    code, _, err = _run(capsys, "--model", str(standalone_dir), "--prompt", "x", "--verify")
    assert code == 2 and "--verify needs koda.sandbox" in err


def test_verify_judges_prompt_plus_completion_through_the_one_judge(capsys, standalone_dir, monkeypatch, tmp_path):
    import koda.judge

    seen, real = [], koda.judge.judge

    def spy(submissions, **kw):  # the real judge, watched: every sample goes through one call
        seen.append(list(submissions))
        return real(submissions, **kw)

    monkeypatch.setattr(koda.judge, "judge", spy)
    tests = tmp_path / "t.py"
    tests.write_text("assert f(1) == 1\n")
    code, out, err = _run(capsys, "--model", str(standalone_dir), "--prompt", "def f(x):\\n", "--json",
                          "--max-new-tokens", "4", "--verify", str(tests), "--verify-budget", "0.5")
    assert code == 0, err
    sample = json.loads(out)["samples"][0]
    ((submission,),) = seen
    assert (submission.program, submission.tests) == ("def f(x):\n" + sample["completion"], "assert f(1) == 1\n")
    assert sample["verify"]["tests"]["total"] == 1 and "complexity" in sample["verify"]
    code, out, _ = _run(capsys, "--model", str(standalone_dir), "--prompt", "def f(x):\\n", "--max-new-tokens", "4",
                        "--verify", str(tests), "--verify-budget", "0.5")
    assert code == 0 and "--- tests: " in out and "--- complexity: " in out
