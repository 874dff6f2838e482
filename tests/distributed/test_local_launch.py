"""The one builder of local DeepSpeed launcher commands, and the rank-finding it relies on."""

import os
import signal
import subprocess
import sys
import time

from koda.distributed.local_launch import command, rank_processes


def test_module_and_script_commands():
    assert command(2, 29500, "koda.train", ["--config", "smoke"]) == [
        sys.executable, "-u", "-m", "deepspeed.launcher.runner", "--num_gpus", "2", "--master_port", "29500",
        "--module", "koda.train", "--config", "smoke"]
    assert command(1, 1234, "tools/x.py", ["--a"], module=False)[-4:] == ["--master_port", "1234", "tools/x.py", "--a"]


def test_ranks_are_the_children_of_deepspeeds_launch_module(tmp_path):
    """A stand-in tree shaped like runner -> launch.py -> ranks: only launch.py's children count."""
    launch = tmp_path / "deepspeed" / "launcher"
    launch.mkdir(parents=True)
    (tmp_path / "deepspeed" / "__init__.py").write_text("")
    (launch / "__init__.py").write_text("")
    (launch / "launch.py").write_text(
        "import subprocess, sys, time\n"
        "kids = [subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']) for _ in range(2)]\n"
        "time.sleep(60)\n")
    runner = subprocess.Popen([sys.executable, "-c", "import subprocess, sys; subprocess.run([sys.executable, "
                               "'-m', 'deepspeed.launcher.launch'])"], cwd=tmp_path, start_new_session=True)
    try:
        deadline = time.time() + 30
        while len(rank_processes(runner.pid)) < 2 and time.time() < deadline:
            time.sleep(0.1)
        ranks = rank_processes(runner.pid)
        assert len(ranks) == 2
        assert all("deepspeed.launcher.launch" in r.parent().cmdline() for r in ranks)
        assert runner.pid not in {r.pid for r in ranks}
    finally:
        os.killpg(runner.pid, signal.SIGKILL)
        runner.wait()
