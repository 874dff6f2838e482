"""The one builder of local DeepSpeed launcher commands, and the rank-finding it relies on."""

import os
import signal
import subprocess
import sys
import time

from koda.distributed.local_launch import command, rank_processes


def test_module_and_script_commands():
    cmd = command(2, 29500, "koda.train", ["--config", "smoke"])
    assert cmd[:4] == [sys.executable, "-u", "-m", "deepspeed.launcher.launch"]
    assert cmd[5:] == ["--master_addr=127.0.0.1", "--master_port=29500", "--module", "koda.train", "--config", "smoke"]
    assert command(1, 1234, "tools/x.py", ["--a"], module=False)[-3:] == ["--master_port=1234", "tools/x.py", "--a"]


def test_world_info_is_what_deepspeeds_runner_passes_launch_py():
    """launch.py decodes --world_info as the runner encodes it: both ranks on localhost, devices 0 .. N-1."""
    from deepspeed.launcher.runner import encode_world_info

    for world in (1, 2, 4):
        assert command(world, 1, "m")[4] == f"--world_info={encode_world_info({'localhost': list(range(world))})}"


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


def _ranks_leaving_a_buffer(exit_code: int = 0, sleep_s: float = 0.0):
    """A stand-in for ``command``: one "rank" that makes the shared-memory buffer DeepSpeed's CPU
    backend would leave for its port, then exits with `exit_code` after `sleep_s`."""
    def fake_command(world, port, target, args=(), module=True):
        path = f"/dev/shm/deepspeed_allreduce_buffer_koda-test_127.0.0.1_{port}_0"
        return [sys.executable, "-c", f"import sys, time; open({path!r}, 'w').close(); print({path!r}); "
                                      f"time.sleep({sleep_s}); sys.exit({exit_code})"]
    return fake_command


def test_launch_ranks_removes_the_shm_buffers_of_failed_ranks(monkeypatch):
    from koda.distributed import local_launch

    monkeypatch.setattr(local_launch, "command", _ranks_leaving_a_buffer(exit_code=3))
    proc = local_launch.launch_ranks("koda.nothing", ["--x"])
    assert proc.returncode == 3
    buffer = proc.stdout.strip()
    assert buffer.startswith("/dev/shm/deepspeed_allreduce_buffer_")
    assert not os.path.exists(buffer)


def test_launch_ranks_removes_the_shm_buffers_when_the_ranks_time_out(monkeypatch, tmp_path):
    import glob

    import pytest

    from koda.distributed import comm, local_launch

    pattern, seen = "/dev/shm/deepspeed_allreduce_buffer_*_127.0.0.1_1_*", []
    remove = comm.remove_shm_buffers

    def remove_and_record(addr, port):
        seen.append(glob.glob(pattern))
        remove(addr, port)

    monkeypatch.setattr(comm, "remove_shm_buffers", remove_and_record)
    monkeypatch.setattr(local_launch, "command", _ranks_leaving_a_buffer(sleep_s=30))
    monkeypatch.setattr(local_launch, "free_port", lambda: 1)       # a port no real run has
    with pytest.raises(subprocess.TimeoutExpired):
        local_launch.launch_ranks("koda.nothing", timeout=3)
    assert len(seen) == 1 and len(seen[0]) == 1                     # the buffer was there ...
    assert glob.glob(pattern) == []                                 # ... and is gone


def test_run_ranks_raises_with_the_ranks_output(monkeypatch, tmp_path):
    import pytest

    from koda.distributed import local_launch

    monkeypatch.setattr(local_launch, "command", _ranks_leaving_a_buffer(exit_code=1))
    with pytest.raises(local_launch.RanksFailed, match=r"ranks of m:f failed \(exit 1\)") as err:
        local_launch.run_ranks("m:f", {}, tmp_path / "out")
    assert "deepspeed_allreduce_buffer_" in err.value.tail()


def test_spawned_ranks_get_the_launchers_environment_and_a_failure_stops_the_rest(tmp_path):
    import time

    from koda.distributed.local_launch import spawn_ranks

    script = tmp_path / "rank.py"
    script.write_text("import os, sys, time\n"
                      "r = int(os.environ['RANK'])\n"
                      "e = os.environ\n"
                      "print('rank', r, e['LOCAL_RANK'], e['WORLD_SIZE'], e['MASTER_PORT'])\n"
                      "sys.stdout.flush()\n"
                      "if r == 1 and len(sys.argv) > 1: sys.exit(3)\n"
                      "time.sleep(0 if len(sys.argv) == 1 else 600)\n")
    ok = spawn_ranks(2, 29611, str(script), module=False)
    assert ok.returncode == 0 and ok.stdout == "rank 0 0 2 29611\nrank 1 1 2 29611\n"
    start = time.monotonic()
    failed = spawn_ranks(2, 29612, str(script), ["fail"], module=False, timeout=120)
    assert failed.returncode == 3 and time.monotonic() - start < 30     # rank 0 was stopped, not waited for
