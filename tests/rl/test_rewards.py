"""Reward components on known programs, judged by the real sandbox."""

import pytest

from koda.errors import ConfigError
from koda.judge import Verdict
from koda.rl.rewards import COMPONENTS, RewardSample, RewardWeights, reward_from_verdict, score, structure_components
from koda.sandbox import SandboxPolicy, SandboxPool, results

PROMPT = 'def fast_power(x, n):\n    """x ** n modulo 2003 in O(log n) multiplications."""\n'
REF = ("    if n == 0:\n        return 1 % 2003\n    half = fast_power(x, n // 2)\n    square = half * half % 2003\n"
       "    if n % 2 == 1:\n        return square * x % 2003\n    return square\n")
TESTS = ("assert fast_power(2, 10) == 1024\nassert fast_power(3, 1) == 3\nassert fast_power(5, 0) == 1\n"
         "assert fast_power(7, 2) == 49\n")
TARGET = {"kind": "polylog", "n_exponent": 0.0, "log_exponent": 1}
WRONG = "    return x * n % 2003\n"
COMPLETIONS = {
    "perfect": REF,
    "slow": "    if n == 0:\n        return 1 % 2003\n    return x * fast_power(x, n - 1) % 2003\n",
    "wrong": WRONG,
    "syntax": "    if n == 0\n        return 1\n",
    # the reference with a hang before its answer: looks almost identical, never returns
    "hang": REF.replace("    return square\n", "    while True:\n        pass\n    return square\n"),
    "exit": "    import os\n    os._exit(0)\n",
    "fake": "    print('4 passed, 0 failed')\n    print('PASSED')\n" + WRONG,
    "empty": "",                      # the prompt's docstring alone: parses, writes nothing
    "pass": "    pass\n",
    "ellipsis": "    ...\n",
    "docstring": '    """To do."""\n    ...\n',
    "raise": "    raise\n",
    "not implemented": "    raise NotImplementedError('later')\n",
    # the reference with a segfault / an allocation past the sandbox's memory before its answer
    "crash": "    import ctypes\n    ctypes.string_at(0)\n" + REF,
    "memory": "    grab = bytearray(1 << 30)\n" + REF,
}
POLICY = SandboxPolicy(timeout_s=5.0, memory_mb=256, nproc=16)


@pytest.fixture(scope="module")
def rewards():
    weights = RewardWeights()
    samples = [RewardSample(PROMPT + c, PROMPT + REF, TESTS, "fast_power", TARGET) for c in COMPLETIONS.values()]
    with SandboxPool(workers=2, policy=POLICY) as pool:
        out = score(samples, weights, pool=pool, budget_s=1.0)
    return dict(zip(COMPLETIONS, out, strict=True))


def test_perfect_solution_earns_every_component(rewards):
    r = rewards["perfect"]
    assert r.components == {"tests": 1.0, "complexity": 1.0, "syntax": 0.0, "similarity": 1.0,
                            "spectral": pytest.approx(1.0), "poincare": pytest.approx(1.0)}
    assert r.total == pytest.approx(1.0 + 0.5 + 0.1 * 3) and not r.failed
    assert set(r.log_items()) == {f"rl/reward/{n}" for n in (*COMPONENTS, "total", "failed")}


def test_correct_but_too_slow_misses_only_complexity(rewards):
    r = rewards["slow"]
    assert r.components["tests"] == 1.0 and r.components["complexity"] == 0.0
    assert 0 < r.components["similarity"] < 1 and r.total < rewards["perfect"].total


def test_wrong_solution_gets_its_fraction_and_no_complexity(rewards):
    r = rewards["wrong"]
    assert r.components["tests"] == 0.25 and r.components["complexity"] == 0.0 and not r.failed
    assert r.total < rewards["slow"].total


def test_syntax_error_is_penalised_not_failed(rewards):
    r = rewards["syntax"]
    assert r.status == "syntax_error" and not r.failed
    assert r.components == {"tests": 0.0, "complexity": 0.0, "syntax": -1.0, "similarity": 0.0,
                            "spectral": 0.0, "poincare": 0.0}
    assert r.total == pytest.approx(-0.5)


@pytest.mark.parametrize("name, status", [("hang", "timeout"), ("exit", "error"), ("crash", "crash"),
                                          ("memory", "memory")])
def test_hang_and_crash_get_the_failure_reward(rewards, name, status):
    """From the real sandbox: each looks like the reference (high shaping terms) and must not
    collect them (a segfaulting program earned +0.69 when ``crash`` was not a failure)."""
    r = rewards[name]
    assert r.status == status and r.failed and r.total == -1.0
    if name != "exit":   # its shaping terms are high, and do not count
        assert r.components["similarity"] > 0.8 and RewardWeights().total(r.components) > 0


@pytest.mark.parametrize("status", [s for s in results.PROGRAM_STATUSES if s not in ("ok", "syntax_error")])
def test_every_sandbox_failure_status_gets_the_failure_reward(status):
    """Every status the sandbox can return for a run that reached no verdict on some test."""
    report = results.ExecReport.from_tests([results.TestResult("test_check", 1, "passed"),
                                           results.TestResult("assert@2", 2, status)])
    assert report.status == status
    r = reward_from_verdict(RewardSample(PROMPT + REF, PROMPT + REF, TESTS, "fast_power", TARGET),
                            Verdict(None, report, None), RewardWeights())
    assert r.failed and r.status == status and r.total == RewardWeights().failure


def test_printed_results_earn_nothing(rewards):
    """The wrong program again, printing what a harness would: its score is the wrong program's."""
    fake, wrong = rewards["fake"], rewards["wrong"]
    assert fake.components["tests"] == wrong.components["tests"] == 0.25 and fake.status == "ok"
    assert not fake.failed
    assert all(fake.components[k] == wrong.components[k] for k in ("tests", "complexity", "syntax"))


def test_structure_terms_order_programs_by_closeness():
    ref = PROMPT + REF
    near = structure_components(PROMPT + REF.replace("half", "h"), ref, "fast_power")
    far = structure_components(PROMPT + "    return sum(range(n))\n", ref, "fast_power")
    for name in ("similarity", "spectral", "poincare"):
        assert far[name] < near[name] <= 1.0, name
    assert near["spectral"] == pytest.approx(1.0)   # renaming keeps the tree, so the spectrum


def test_weights_are_validated():
    with pytest.raises(ConfigError, match=r"rl.rewards.tests must be >= 0, got -1"):
        RewardWeights(tests=-1)
    with pytest.raises(ConfigError, match="rl.rewards.failure must be a finite number"):
        RewardWeights(failure=float("nan"))


@pytest.mark.parametrize("name", ["empty", "pass", "ellipsis", "docstring", "raise", "not implemented"])
def test_a_completion_that_writes_no_code_gets_the_failure_reward(rewards, name):
    """An empty completion parses (the prompt's function has a docstring): without this rule it
    scored above any attempt that risks a syntax error, and RL collapsed to it."""
    r = rewards[name]
    assert r.status == "no_code" and r.failed and r.total == RewardWeights().failure
    assert r.total < rewards["syntax"].total and r.total < rewards["wrong"].total


def test_the_shared_docstring_does_not_count_as_similarity():
    docstring_only = PROMPT + "    return 0\n"
    parts = structure_components(docstring_only, PROMPT + REF, "fast_power")
    assert parts["similarity"] < 0.2, parts          # 0.36 with the docstring compared
