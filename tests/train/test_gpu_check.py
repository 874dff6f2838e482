"""tools/gpu_check.sh without a GPU: it refuses in one line, and every command it would run parses."""

import os
import shlex
import subprocess
import sys

import pytest

from koda.distributed import ds_config
from koda.train import cli as train_cli
from tests.helpers.ranks import REPO
from tests.helpers.tools import load_tool

SCRIPT = REPO / "tools/gpu_check.sh"


def _script(*args, timeout=120):
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=timeout)


def test_no_cuda_device_is_refused_in_one_line_before_anything_runs(tmp_path):
    res = _script("--out", str(tmp_path / "out"))
    assert res.returncode == 1 and res.stdout == ""
    assert res.stderr.startswith("gpu_check: no CUDA device (") and res.stderr.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_every_command_parses_with_its_flags(tmp_path):
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
    res = _script("--dry-run", "--peak-tflops", "500", "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr
    commands = [shlex.split(line[2:]) for line in res.stdout.splitlines() if line.startswith("+ ")]
    gpu_check, bench = load_tool("gpu_check"), load_tool("bench_train")
    seen = []
    for argv in commands:
        assert argv[0] == sys.executable
        if argv[1:3] == ["-m", "koda"]:
            assert argv[3] == "train"
            cfg = train_cli.load_config(train_cli.parser().parse_args(argv[4:]))
            assert (cfg.world_size, cfg.model.attention, cfg.logging.peak_tflops) == (1, "flash", 500.0)
            plan = ds_config.resolve(ds_config.load(cfg.ds_config), model=cfg.model, world_size=1,
                                     train_steps=cfg.train.steps, bf16_supported=True)
            assert plan.precision == "bf16" and plan.ep_size == 1
            seen.append(f"train {argv[argv.index('--config') + 1]}")
        elif argv[1] == "tools/bench_train.py":
            args = bench.parser().parse_args(argv[2:])
            assert (args.device, args.ranks, args.attention, args.peak_tflops) == ("cuda", 1, "flash", 500.0)
            seen.append("bench")
        else:
            assert argv[1] == "tools/gpu_check.py"
            args = gpu_check.parser().parse_args(argv[2:])
            if args.command == "ds-config":    # written now: the train commands read them
                assert gpu_check.main(argv[2:]) == 0
            seen.append(args.command)
    assert seen == ["ds-config", "train smoke", "ds-config", "train small", "bench", "summary"]


@pytest.mark.parametrize("name,tflops", [("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0),
                                         ("NVIDIA H200", 989.0), ("NVIDIA GH200 480GB", 989.0),
                                         ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA L40S", 362.0),
                                         ("NVIDIA L4", 121.0), ("NVIDIA GeForce RTX 4090", None)])
def test_datasheet_peak_by_device_name(name, tflops):
    assert load_tool("gpu_check").datasheet_tflops(name) == tflops
