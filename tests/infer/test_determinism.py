"""Deterministic mode across processes: two fresh interpreters, same seed, same token ids."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _generate(model_dir: Path, *argv: str) -> list[list[int]]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "koda", "generate", "--model", str(model_dir), "--json",
                           "--max-new-tokens", "20", "--stop", *argv],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return [s["token_ids"] for s in json.loads(proc.stdout)["samples"]]


@pytest.mark.slow
def test_two_processes_give_identical_tokens(standalone_dir, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": p}) for p in ("def f(x):\n", "import os\n\nclass A:\n")))
    for strategy in (["--strategy", "sample", "--seed", "7", "--top-p", "0.95"],
                     ["--strategy", "contrastive", "--k", "4", "--alpha", "0.6"]):
        runs = [_generate(standalone_dir, "--prompts-file", str(prompts), *strategy) for _ in range(2)]
        assert runs[0] == runs[1], strategy
        assert all(runs[0]), "no tokens generated: the comparison would be empty"
