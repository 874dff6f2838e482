"""Deterministic mode across processes: two fresh interpreters, same seed, same token ids."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# What `koda generate` does, for both seeded sampling and contrastive search, in one process.
SCRIPT = """
import json, sys
from koda.infer import GenerationConfig, complete
from koda.infer.determinism import enable_determinism
from koda.infer.loading import load_model
enable_determinism()
loaded = load_model(sys.argv[1])
prompts = ["def f(x):\\n", "import os\\n\\nclass A:\\n"]
out = {}
for cfg in (GenerationConfig(strategy="sample", seed=7, top_p=0.95, max_new_tokens=20),
            GenerationConfig(strategy="contrastive", candidates=4, alpha=0.6, max_new_tokens=20)):
    out[cfg.strategy] = [c.token_ids for c in complete(loaded.model, loaded.tokenizer, prompts, cfg, stops=())]
print(json.dumps(out))
"""


def _run(model_dir: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(model_dir)], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.slow
def test_two_processes_give_identical_tokens(standalone_dir):
    first, second = _run(standalone_dir), _run(standalone_dir)
    assert first == second
    assert all(ids for runs in first.values() for ids in runs), "no tokens generated: the comparison would be empty"
