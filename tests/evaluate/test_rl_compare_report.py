"""tools/rl_compare.py's report from evaluation samples: per-run rows, means and spreads over
seeds, each variant against (a) paired by task, complexity met per family."""

import json
import re
from types import SimpleNamespace

from tests.helpers.tools import load_tool

TASKS = [f"KODA/heldout/fam{i % 2}/{i}" for i in range(20)]


def _write(out, name, passed: set[int], met: set[int]):
    """Greedy: one sample per task; t0.8: 8 per task, all passing where greedy passes."""
    greedy = [{"task_id": t, "family": t.split("/")[2], "passed": i in passed, "syntax_ok": True,
               "complexity_met": (i in met) if i % 2 == 0 else None} for i, t in enumerate(TASKS)]
    sampled = [{"task_id": t, "family": t.split("/")[2], "passed": i in passed, "syntax_ok": True,
                "complexity_met": None} for i, t in enumerate(TASKS) for _ in range(8)]
    for kind, rows in (("greedy", greedy), ("t0.8", sampled)):
        (out / f"{name}_{kind}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_report_pairs_each_variant_with_ce_only_by_task(tmp_path, capsys, monkeypatch):
    tool = load_tool("rl_compare")
    monkeypatch.setattr(tool, "run_summary", lambda run: {"steps": 10, "seconds": 60.0, "samples": 320})
    _write(tmp_path, "start", set(range(5)), {0})
    for seed, extra in ((1, {10}), (2, {11})):
        _write(tmp_path, f"a-seed{seed}", set(range(5)), {0})
        _write(tmp_path, f"b-seed{seed}", set(range(5)) | {8, 9} | extra, {0, 2, 8})    # +3 tasks, every seed
    tool.report(tmp_path, SimpleNamespace(bootstrap_seed=0), {"a": ["a-seed1", "a-seed2"], "b": ["b-seed1", "b-seed2"]})
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| b: CE + GRPO"))
    greedy = row.split("|")[2]
    # b passes 8 of 20 on each seed (0.40, spread 0), a 5 of 20: +0.15 per task on average
    assert greedy.startswith(" 0.400 (0.000); +0.150 [")
    low, high = (float(x) for x in re.search(r"\[([-+.\d]+), ([-+.\d]+)\]", greedy).groups())
    assert 0 < low < 0.15 < high                       # a gain on 2-3 tasks of 20: above zero, not a point
    a_row = next(line for line in out.splitlines() if line.startswith("| a: CE only"))
    assert "[" not in a_row                             # the baseline is not compared with itself
    family = next(line for line in out.splitlines() if line.startswith("| fam0 |"))
    assert family == "| fam0 | 1/3 | 2/6 | 6/9 |"       # met / passing, greedy, seeds pooled
