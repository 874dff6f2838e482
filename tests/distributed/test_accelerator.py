"""Where DeepSpeed's JIT ops are built: one folder per installation, the user's choice kept,
and one line from the launching process before a build (no real build here)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from koda.distributed import accelerator, local_launch


@pytest.fixture
def clean_env(monkeypatch):
    """DS_ACCELERATOR=cpu, TORCH_EXTENSIONS_DIR unset; both restored afterwards."""
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR", raising=False)
    return monkeypatch


def test_each_installation_builds_into_its_own_folder(clean_env, tmp_path):
    clean_env.setattr(sys, "base_prefix", "/usr")
    clean_env.setattr(sys, "prefix", str(tmp_path / "checkout-a" / ".venv"))
    assert accelerator.configure_accelerator() == "cpu"
    first = Path(os.environ["TORCH_EXTENSIONS_DIR"])
    assert first.is_relative_to(tmp_path / "checkout-a" / ".venv")       # removed with the venv
    assert first.name == f"py{sys.version_info.major}{sys.version_info.minor}_cpu"
    clean_env.setattr(sys, "prefix", str(tmp_path / "checkout-b" / ".venv"))
    assert accelerator.extensions_dir("cpu") != first
    assert accelerator.extensions_dir("cuda") != accelerator.extensions_dir("cpu")
    # outside a venv: a per-user cache folder, still one per interpreter prefix
    clean_env.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    clean_env.setattr(sys, "prefix", "/usr")
    system = accelerator.extensions_dir("cpu")
    assert system.is_relative_to(tmp_path / "cache")
    clean_env.setattr(sys, "base_prefix", "/opt/py")
    clean_env.setattr(sys, "prefix", "/opt/py")
    assert accelerator.extensions_dir("cpu") != system


def test_a_folder_the_user_set_is_kept(clean_env, tmp_path):
    clean_env.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "mine"))
    accelerator.configure_accelerator()
    assert os.environ["TORCH_EXTENSIONS_DIR"] == str(tmp_path / "mine")


def test_the_launching_process_announces_a_build_only_when_the_op_is_missing(clean_env, tmp_path, capsys):
    clean_env.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    assert accelerator.announce_op_build()
    err = capsys.readouterr().err
    assert err == f"koda: building DeepSpeed's CPU ops once into {tmp_path} (about 2 minutes; later runs reuse them)\n"
    built = tmp_path / accelerator.CPU_OP / f"{accelerator.CPU_OP}.so"
    built.parent.mkdir()
    built.write_bytes(b"\x7fELF")
    assert not accelerator.announce_op_build()
    assert capsys.readouterr().err == ""
    clean_env.setenv("DS_ACCELERATOR", "cuda")          # no CPU op to build on a GPU run
    built.unlink()
    assert not accelerator.announce_op_build()


def test_ranks_started_by_the_front_process_inherit_the_folder(clean_env, tmp_path, capfd):
    """``local_launch.run`` (what ``koda train`` starts its ranks with) announces the build and
    hands the folder to what it starts; a stand-in child prints what it got."""
    clean_env.setattr(sys, "base_prefix", "/usr")
    clean_env.setattr(sys, "prefix", str(tmp_path / ".venv"))
    child = [sys.executable, "-c", "import os; print(os.environ['TORCH_EXTENSIONS_DIR'])"]
    assert local_launch.run(child) == 0
    out, err = capfd.readouterr()
    want = accelerator.extensions_dir("cpu")
    assert out == f"{want}\n" and err.startswith(f"koda: building DeepSpeed's CPU ops once into {want} ")
    assert subprocess.run(child, capture_output=True, text=True).stdout == f"{want}\n"   # set here too
