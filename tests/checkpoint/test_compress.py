"""Tucker compression of the expert tensors: the decomposition, the byte count, the written
directory, and the refusals."""

import json

import pytest
import torch

from koda.checkpoint import load_standalone, save_standalone, tucker
from koda.checkpoint.compress import SIDECAR, compress_model_dir, parse_ranks, read_sidecar
from koda.checkpoint.safetensors_io import read_sharded
from koda.cli import main as koda_main
from koda.errors import KodaError
from koda.model import KodaForCausalLM
from tests.helpers.tiny import TINY

INPUTS = torch.randint(0, TINY.vocab_size, (2, 16), generator=torch.Generator().manual_seed(5))
E, F, D = TINY.n_experts, TINY.ffn_hidden, TINY.d_model
FULL = [f"gate_up_proj={E},{2 * F},{D}", f"down_proj={E},{D},{F}"]
quiet = dict(log=lambda *_: None)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    torch.manual_seed(0)
    model = KodaForCausalLM(TINY).eval()
    path = tmp_path_factory.mktemp("compress") / "src"
    save_standalone(model, path)
    return path, model


@pytest.fixture(scope="module")
def full_rank(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("compress") / "full"
    return out, compress_model_dir(source[0], out, ranks=parse_ranks(FULL), **quiet)


def _structured(shape=(4, 24, 16), seed=1):
    """A tensor with a decaying multilinear spectrum, like trained weights rather than noise."""
    g = torch.Generator().manual_seed(seed)
    core = torch.randn(shape, generator=g, dtype=torch.float64)
    for mode, n in enumerate(shape):
        scale = (0.7 ** torch.arange(n, dtype=torch.float64)).reshape([-1 if m == mode else 1 for m in range(3)])
        core = core * scale
    q = [torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))[0] for n in shape]
    return torch.einsum("pqs,ap,bq,cs->abc", core, *q).float()


def test_error_falls_with_every_rank_and_vanishes_at_full_rank():
    weight = _structured()
    ladder = [(1, 2, 2), (2, 3, 3), (2, 6, 4), (3, 10, 6), (4, 16, 10), (4, 22, 14), (4, 24, 16)]
    errors = [tucker.relative_error(weight, tucker.reconstruct(tucker.decompose(weight, r))) for r in ladder]
    assert all(a > b for a, b in zip(errors, errors[1:], strict=False)), errors
    assert errors[0] > 0.1 and errors[-1] < 1e-5
    # the expert mode counts too: the same weight ranks with one expert direction fewer lose accuracy
    assert tucker.relative_error(weight, tucker.reconstruct(tucker.decompose(weight, (3, 24, 16)))) > 1e-3
    parts = tucker.decompose(weight, (3, 10, 6))
    assert parts.ranks == (3, 10, 6) and [tuple(u.shape) for u in parts.factors] == [(4, 3), (24, 10), (16, 6)]
    again = tucker.decompose(weight, (3, 10, 6))
    assert torch.equal(parts.core, again.core) and all(map(torch.equal, parts.factors, again.factors))


def test_ratio_picks_the_largest_fitting_ranks_with_the_expert_mode_kept():
    shape = (E, 2 * F, D)
    for ratio in (1.0, 0.5, 0.1):
        ranks = tucker.ranks_for_ratio(shape, ratio, "t")
        assert ranks[0] == E and tucker.compressed_numel(shape, ranks) <= ratio * E * 2 * F * D
        bigger = (E, ranks[1] + 1, round((ranks[1] + 1) * D / (2 * F)))
        assert tucker.compressed_numel(shape, bigger) > ratio * E * 2 * F * D
    assert tucker.ranks_for_ratio(shape, 0.5, "t")[1] < tucker.ranks_for_ratio(shape, 1.0, "t")[1]
    with pytest.raises(KodaError, match="no ranks fit ratio 0.001"):
        tucker.ranks_for_ratio(shape, 0.001, "t")


def test_compressed_bytes_are_the_core_and_factors_written(source, tmp_path):
    summary = compress_model_dir(source[0], tmp_path / "m", ranks=parse_ranks(["4,24,16"]), iterations=5, **quiet)
    parts, record = read_sidecar(tmp_path / "m")
    dense = read_sharded(tmp_path / "m")
    assert len(summary.tensors) == 2 * TINY.n_layers == len(parts)
    for report in summary.tensors:
        stored = parts[report.name]
        assert stored.ranks == report.ranks == (4, 24, 16)
        assert [tuple(u.shape) for u in stored.factors] == [(n, r) for n, r in zip(report.shape, report.ranks,
                                                                                       strict=True)]
        on_disk = sum(t.numel() * t.element_size() for t in (stored.core, *stored.factors))
        assert report.compressed_bytes == on_disk == tucker.compressed_numel(report.shape, report.ranks) * 4
        assert record["tensors"][report.name]["compressed_bytes"] == on_disk
        # the dense weights are the sidecar's reconstruction, and the reported error is theirs
        assert torch.equal(dense[report.name], tucker.reconstruct(stored).float())
        original = read_sharded(source[0])[report.name]
        assert report.relative_error == pytest.approx(tucker.relative_error(original, dense[report.name]))
        assert 0.05 < report.relative_error < 1
    rest = sum(t.numel() * 4 for n, t in dense.items() if n not in parts)
    assert summary.compressed_model_bytes == rest + summary.compressed_expert_bytes < summary.model_bytes


def test_full_rank_output_loads_copies_other_tensors_and_keeps_the_logits(source, full_rank):
    src_dir, model = source
    out, summary = full_rank
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", SIDECAR]
    assert all(t.relative_error < 1e-5 for t in summary.tensors)
    before, after = read_sharded(src_dir), read_sharded(out)
    experts = {t.name for t in summary.tensors}
    assert experts == {n for n in before if ".experts." in n}
    for name, tensor in before.items():
        if name not in experts:
            assert after[name].dtype == tensor.dtype and torch.equal(after[name], tensor), name
    loaded = load_standalone(out)
    with torch.no_grad():
        torch.testing.assert_close(loaded(INPUTS), model(INPUTS), rtol=0, atol=1e-5)
    assert json.loads((out / "config.json").read_text())["source"]["tucker"]["file"] == SIDECAR


def test_ratio_output_is_within_budget(source, tmp_path):
    summary = compress_model_dir(source[0], tmp_path / "m", ratio=0.25, **quiet)
    assert summary.compressed_expert_bytes <= 0.25 * summary.expert_bytes
    assert all(t.ranks[0] == E and t.relative_error > 0.1 for t in summary.tensors)
    assert load_standalone(tmp_path / "m") is not None


@pytest.mark.parametrize("spec, message", [
    (["0,4,4"], "rank 0 for mode 0 must be a positive integer"),
    (["4,200,4"], "rank 200 for mode 1 exceeds the mode size"),
    (["4,1,1"], "rank 4 for mode 0 exceeds the product 1"),
    (["4,4"], "expected three ranks"),
    (["4,x,4"], "expected three integers"),
    (["up=4,4,4"], "'up' is not one of gate_up_proj, down_proj"),
    (["gate_up_proj=4,8,8"], "no ranks for down_proj"),
])
def test_bad_ranks_are_one_line_errors_before_any_work(source, tmp_path, spec, message):
    with pytest.raises(KodaError, match=message) as err:
        compress_model_dir(source[0], tmp_path / "m", ranks=parse_ranks(spec), **quiet)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "m").exists() and not list(tmp_path.iterdir())


@pytest.mark.parametrize("kwargs, message", [
    (dict(ratio=0.0), "--ratio 0.0 must be > 0"),
    (dict(ratio=0.5, iterations=0), "--iterations 0 must be at least 1"),
    (dict(ratio=0.5, ranks={"*": (4, 8, 8)}), "exactly one of --ranks and --ratio"),
])
def test_bad_ratio_and_iterations_are_one_line_errors(source, tmp_path, kwargs, message):
    with pytest.raises(KodaError, match=message):
        compress_model_dir(source[0], tmp_path / "m", **kwargs, **quiet)
    assert not (tmp_path / "m").exists()


def test_bad_directories_are_refused_in_one_line(source, tmp_path, capsys):
    torch.manual_seed(0)
    save_standalone(KodaForCausalLM(TINY), tmp_path / "hf", fmt="hf-mixtral")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"format": "something-else"}))
    cases = [(tmp_path / "nothing", "no config.json"), (tmp_path / "hf", "hf-mixtral export"),
             (tmp_path / "other", "not a KODA standalone config")]
    for path, message in cases:
        assert koda_main(["compress", str(path), "-o", str(tmp_path / "out"), "--ratio", "0.5"]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert koda_main(["compress", str(source[0]), "-o", str(source[0]), "--ratio", "0.5"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_check_ranks_accepts_exactly_the_mode_sizes():
    assert tucker.check_ranks((4, 8, 6), (4, 8, 6), "t") == (4, 8, 6)
    with pytest.raises(KodaError, match="3-D"):
        tucker.check_ranks((4, 8), (4, 8, 1), "t")
