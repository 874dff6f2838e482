"""``koda convert`` on a real 2-rank ZeRO-3 + AutoEP checkpoint: round trip against the
DeepSpeed engine, against DeepSpeed's own universal conversion, and every refusal."""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from koda.checkpoint import convert_checkpoint, load_from_checkpoint, load_standalone, read_config
from koda.cli import main as koda
from tests.helpers.ranks import REPO, run_ranks

pytestmark = pytest.mark.slow
TAG = "step00000006"
INPUTS = torch.randint(0, 512, (2, 32), generator=torch.Generator().manual_seed(11))   # [B, S]


def checksums(root) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def engine_logits(trained_run, tmp_path_factory):
    """[B, S, V] fp32 logits of the DeepSpeed engine (2 ranks, AutoEP) holding checkpoint TAG."""
    out = tmp_path_factory.mktemp("engine")
    torch.save(INPUTS, out / "inputs.pt")
    results = run_ranks("tests.helpers.checkpoint_jobs:engine_logits",
                        {"config_path": str(trained_run.config), "tag": TAG, "inputs_path": str(out / "inputs.pt"),
                         "out_path": str(out / "logits.pt")}, out / "ranks")
    assert all(r["step"] == 6 and r["dtype"] == "torch.float32" for r in results)
    return torch.load(out / "logits.pt")


def test_converted_model_gives_the_engines_logits(trained_run, engine_logits, tmp_path):
    before = checksums(trained_run.run_dir)
    summary = convert_checkpoint(trained_run.run_dir, tmp_path / "m", tag=TAG)
    assert checksums(trained_run.run_dir) == before
    model = load_standalone(tmp_path / "m")
    with torch.no_grad():
        logits = model(INPUTS)
    diff = (logits - engine_logits).abs().max().item()
    print(f"standalone vs engine logits: max abs diff {diff:.3e}")
    assert diff == 0.0                                         # docs/checkpoints.md: identical
    assert summary.parameters == sum(p.numel() for p in model.parameters())
    plain = load_file(tmp_path / "m" / "model.safetensors")               # no KODA code involved
    assert set(plain) == set(model.state_dict())
    assert all(torch.equal(plain[k], v) for k, v in model.state_dict().items())
    with torch.no_grad():                                              # the same, read in place
        assert torch.equal(load_from_checkpoint(trained_run.run_dir, TAG)(INPUTS), logits)
    info = read_config(tmp_path / "m")
    assert info.source["step"] == 6 and info.source["world_size"] == 2
    assert info.tokenizer.read_bytes() == Path(trained_run.data.tokenizer).read_bytes()


def test_hf_mixtral_export_gives_the_engines_logits_in_transformers(trained_run, engine_logits, tmp_path):
    transformers = pytest.importorskip("transformers")
    convert_checkpoint(trained_run.checkpoints, tmp_path / "hf", tag=TAG, fmt="hf-mixtral")
    model = transformers.MixtralForCausalLM.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        logits = model(INPUTS).logits
    diff = (logits - engine_logits).abs().max().item()
    print(f"transformers Mixtral vs engine logits: max abs diff {diff:.3e}")
    assert diff == 0.0                                         # docs/checkpoints.md: identical


def test_reader_agrees_with_deepspeeds_universal_conversion_bit_for_bit(trained_run, tmp_path):
    from koda.checkpoint.zero3 import Zero3Checkpoint

    out = tmp_path / "universal" / TAG
    proc = subprocess.run([sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal", "--input_folder",
                           str(trained_run.checkpoints / TAG / "actor"), "--output_folder", str(out),
                           "--num_extract_workers", "1", "--num_merge_workers", "1"],
                          capture_output=True, text=True, env={**os.environ, "DS_ACCELERATOR": "cpu"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    reader = Zero3Checkpoint(trained_run.checkpoints / TAG / "actor")
    assert len(reader.shapes) == 23
    for name, shape in reader.shapes.items():
        reference = torch.load(out / "zero" / name / "fp32.pt", weights_only=False)
        reference = reference["param"] if isinstance(reference, dict) else reference
        assert torch.equal(reader.tensor(name), reference.view(shape)), name


def test_cli_writes_bf16_shards_with_an_index_and_a_summary(trained_run, tmp_path, capsys):
    rc = koda(["convert", str(trained_run.run_dir), "--tag", "step00000004", "--output", str(tmp_path / "m"),
               "--dtype", "bf16", "--max-shard-size", "150KB"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "238,400 total" in printed and "4 per MoE layer x 2 layers" in printed and "bfloat16" in printed
    index = json.loads((tmp_path / "m" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    model = load_standalone(tmp_path / "m")
    assert model.lm_head.weight.dtype == torch.bfloat16
    exact = convert_checkpoint(trained_run.run_dir, tmp_path / "fp32", tag="step00000004")
    assert exact.dtype == torch.float32
    reference = load_standalone(tmp_path / "fp32")
    assert torch.equal(model.model.layers[1].mlp.experts.gate_up_proj,
                       reference.model.layers[1].mlp.experts.gate_up_proj.to(torch.bfloat16))


# ----------------------------------------------------------------- refusals
def _copy(trained_run, root):
    """A run dir with the run config and checkpoint TAG only (what each refusal test damages)."""
    run = root / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(trained_run.run_dir / "config.json", run / "config.json")
    shutil.copytree(trained_run.checkpoints / TAG, run / "checkpoints" / TAG)
    (run / "checkpoints" / "latest").write_text(TAG)
    return run


def _record(tag_dir, path):
    """Record `path`'s new size and digest in COMPLETE, as if it had been saved that way."""
    from koda.distributed.checkpoint import file_digest

    record = json.loads((tag_dir / "COMPLETE").read_text())
    record["files"][str(path.relative_to(tag_dir))] = {"size": path.stat().st_size, "sha256": file_digest(path)}
    (tag_dir / "COMPLETE").write_text(json.dumps(record))


def _rewrite_client_state(run, change):
    """Edit rank 0's model-states file and record it, so only the content is wrong."""
    tag_dir = run / "checkpoints" / TAG
    path = tag_dir / "actor" / "zero_pp_rank_0_mp_rank_00_model_states.pt"
    state = torch.load(path, weights_only=False)
    change(state)
    torch.save(state, path)
    _record(tag_dir, path)


def _truncate(run):
    path = run / "checkpoints" / TAG / "actor" / "zero_pp_rank_1_mp_rank_00_optim_states.pt"
    path.write_bytes(path.read_bytes()[:-1000])


def _scribble(run, record=False):
    path = run / "checkpoints" / TAG / "actor" / "zero_pp_rank_1_mp_rank_00_optim_states.pt"
    data = bytearray(path.read_bytes())
    data[-300:] = b"\xff" * 300                  # same size, the zip directory destroyed
    path.write_bytes(bytes(data))
    if record:
        _record(run / "checkpoints" / TAG, path)


def _one_weight_changed(run):
    """A same-size file that still loads: one fp32 master weight of rank 1 altered in place.
    Before digests this converted without complaint into a silently different model."""
    path = run / "checkpoints" / TAG / "actor" / "zero_pp_rank_1_mp_rank_00_optim_states.pt"
    size = path.stat().st_size
    state = torch.load(path, weights_only=False)
    with torch.no_grad():
        state["optimizer_state_dict"]["fp32_flat_groups"][0][0] += 1.0
    torch.save(state, path)
    assert path.stat().st_size == size


def _other_run_model(run):
    config = json.loads((run / "config.json").read_text())
    config["model"]["d_model"] = 128
    (run / "config.json").write_text(json.dumps(config))


def _record_disagrees_with_tensors(run):
    (run / "config.json").unlink()
    _rewrite_client_state(run, lambda s: s["koda"]["model"].update(ffn_hidden=128))


def _future_format(run):
    _rewrite_client_state(run, lambda s: s["koda"].update(format=3, koda_version="9.0.0"))


def _unknown_model_field(run):
    _rewrite_client_state(run, lambda s: s["koda"]["model"].update(moe_shared_experts=1))


def _not_koda(run):
    _rewrite_client_state(run, lambda s: s.pop("koda"))


def _output_exists(run):
    (run.parent / "out").mkdir()


CASES = {
    "missing tag": (None, ["--tag", "step00000099"], r"no tag 'step00000099' \(complete: step00000006\)"),
    "truncated shard": (_truncate, [], r"actor/zero_pp_rank_1_mp_rank_00_optim_states.pt is \d+ bytes, \d+ when saved"),
    "corrupt shard": (_scribble, [], r"file actor/zero_pp_rank_1_mp_rank_00_optim_states.pt differs from the one "
                                     r"saved \(sha256 digest mismatch: corrupt\)$"),
    "same-size change that loads": (_one_weight_changed, [], r"file actor/zero_pp_rank_1_mp_rank_00_optim_states.pt "
                                                             r"differs from the one saved"),
    "corrupt shard with a matching record": (lambda run: _scribble(run, record=True), [],
                                             r"zero_pp_rank_1_mp_rank_00_optim_states.pt is unreadable"),
    "another model (run config)": (_other_run_model, [], r"another model than .* \(model.d_model 64 in the checkpoint"),
    "another model (tensors)": (_record_disagrees_with_tensors, ["--tokenizer", "TOKENIZER"],
                                r"experts.gate_up_proj has shape \(4, 192, 64\), the config says \(4, 256, 64\)"),
    "another KODA version": (_future_format, [], r"written by KODA 9.0.0 in checkpoint format 3; this KODA reads "
                                                 r"formats 1 and 2"),
    "another KODA version (model field)": (_unknown_model_field, [],
                                           r"model record is not readable .* unknown key 'moe_shared_experts'"),
    "not a KODA checkpoint": (_not_koda, [], r"not written by KODA"),
    "output exists": (_output_exists, [], r"output .*out already exists"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_refusals_are_one_line_and_leave_the_source_untouched(trained_run, tmp_path, capsys, case):
    damage, extra, message = CASES[case]
    run = _copy(trained_run, tmp_path)
    if damage is not None:
        damage(run)
    extra = [str(trained_run.data.tokenizer) if a == "TOKENIZER" else a for a in extra]
    before = checksums(tmp_path)
    rc = koda(["convert", str(run), "--output", str(tmp_path / "out"), *extra])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("koda convert: error: "), err
    assert re.search(message, err), err
    assert checksums(tmp_path) == before
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []


def test_an_interrupted_conversion_leaves_nothing_that_looks_complete(trained_run, tmp_path, monkeypatch):
    """A conversion killed (SIGKILL) while writing its second shard leaves only a .tmp-
    directory; an exception cleans up entirely; the next attempt succeeds."""
    out = tmp_path / "m"
    script = (
        "import os, signal, koda.checkpoint.safetensors_io as io\n"
        "real, calls = io.save_file, []\n"
        "def dying(*a, **k):\n"
        "    calls.append(1)\n"
        "    if len(calls) == 2: os.kill(os.getpid(), signal.SIGKILL)\n"
        "    real(*a, **k)\n"
        "io.save_file = dying\n"
        "from koda.checkpoint import convert_checkpoint\n"
        f"convert_checkpoint({str(trained_run.run_dir)!r}, {str(out)!r}, tag={TAG!r}, max_shard_size='150KB')\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env={**os.environ, "DS_ACCELERATOR": "cpu"},
                          capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert not out.exists()
    leftovers = list(tmp_path.iterdir())
    assert len(leftovers) == 1 and leftovers[0].name.startswith("m.tmp-")
    assert not (leftovers[0] / "config.json").exists()

    def failing(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("koda.checkpoint.safetensors_io.save_file", failing)
    with pytest.raises(OSError, match="disk full"):
        convert_checkpoint(trained_run.run_dir, tmp_path / "m2", tag=TAG)
    monkeypatch.undo()
    assert not (tmp_path / "m2").exists() and len(list(tmp_path.iterdir())) == 1

    convert_checkpoint(trained_run.run_dir, out, tag=TAG)
    retried, direct = load_standalone(out).state_dict(), load_from_checkpoint(trained_run.run_dir, TAG).state_dict()
    assert set(retried) == set(direct) and all(torch.equal(retried[k], direct[k]) for k in direct)
