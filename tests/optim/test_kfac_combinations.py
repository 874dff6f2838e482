"""K-FAC through ``koda train`` (ZeRO-3 + AutoEP on CPU ranks) in the combinations the
preconditioner-level tests do not reach: bf16, gradient accumulation, an expert-data-parallel
group of two ranks, and the torus-latency learning-rate scales under ``koda launch``.

The compared runs (``LAYOUTS``, each trained once per session) share one global batch per
step: 8 sequences of 64 tokens in the same data order (seed 7), however they are laid out over
ranks and micro-batches (``test_layouts_see_the_same_global_batches`` checks it), at a
constant learning rate (DeepSpeed's schedule gives 0 to the first step whatever the config, so
4 of the 5 steps move the weights). The balancing loss is off: it is a product of two batch
means, so it changes with the micro-batch a router sees, while cross-entropy (a mean over
equal-sized micro-batches) does not. The reference is one rank, where K-FAC sums nothing
across ranks and multiplies no token count, so it cannot share an error with the others.
"""

from __future__ import annotations

import math
import subprocess

import pytest
import torch
import yaml

from tests.helpers.kfac_settings import TEXTBOOK
from tests.helpers.kill_resume import launch_command, records
from tests.helpers.ranks import REPO, launch, rank_env
from tests.helpers.tiny import write_run_config

pytestmark = pytest.mark.slow

STEPS, SEQ, GLOBAL = 5, 64, 8
KFAC = {"name": "kfac", "lr": 0.05, "momentum": 0.9,
        "kfac": {**TEXTBOOK, "inv_update_steps": 1, "damping": 1e-2, "kl_clip": 1e-2}}
CONSTANT_LR = {"type": "WarmupCosineLR", "params": {"total_num_steps": "auto", "warmup_num_steps": 1,
                                                    "warmup_min_ratio": 1.0, "cos_min_ratio": 1.0}}
# name: (ranks, micro-batch, accumulation steps, bf16, expert-parallel size); GLOBAL sequences each
LAYOUTS = {"one": (1, 8, 1, False, 1), "bf16": (2, 4, 1, True, 2), "accumulated": (1, 4, 2, False, 1),
           "edp2": (4, 2, 1, False, 2)}
# fp32 runs of one global batch in different layouts differ by summation order only: at most
# 8e-8 relative measured on the losses, 3e-8 on the KL scale
FP32_REL = 1e-5
# bf16 against fp32, cross-entropy: 2e-5 relative measured (CPU with AVX512-BF16) on losses
# near log(512), where the small initial logits make the loss insensitive to rounding; 1e-3
# leaves 50x room for another CPU's bf16 kernels and stays a quarter of bf16's own unit
# roundoff (2^-8). (The KL scale, a ratio of rounded sums, moved 5e-4: not compared.)
BF16_REL = 1e-3


class Runs:
    """The layouts' runs, each trained once, on first use, and shared by the tests."""

    def __init__(self, data, root):
        self.data, self.root, self.done = data, root, {}

    def __getitem__(self, name: str) -> list[dict]:
        if name not in self.done:
            self.done[name] = self._train(name)
        return self.done[name]

    def run_dir(self, name: str):
        return self.root / name

    def _train(self, name: str) -> list[dict]:
        world, micro, accum, bf16, ep = LAYOUTS[name]
        assert world * micro * accum == GLOBAL
        ds = {"train_micro_batch_size_per_gpu": micro, "gradient_accumulation_steps": accum,
              "bf16": {"enabled": bf16}, "scheduler": CONSTANT_LR,
              "expert_parallel": {"enabled": True, "autoep_size": ep, "use_grouped_mm": False}}
        config = write_run_config(self.root / f"{name}.yaml", self.data, self.run_dir(name), steps=STEPS, ds=ds,
                                  world_size=world, optimizer=KFAC, moe={"aux_loss_weight": 0.0},
                                  train={"eval_batches": 1})
        proc = launch(["koda.train", "--config", str(config)], world=world, timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        logged = records(self.run_dir(name))
        assert [r["step"] for r in logged] == list(range(STEPS + 1))
        return logged


@pytest.fixture(scope="module")
def runs(tiny_data, tmp_path_factory) -> Runs:
    return Runs(tiny_data, tmp_path_factory.mktemp("kfac-combinations"))


def _trained(logged: list[dict], key: str) -> list[float]:
    """`key` after each training step (record 0 is the untrained model's evaluation)."""
    return [r[key] for r in logged[1:]]


def assert_same_trajectory(got: list[dict], want: list[dict], rel: float,
                           keys: tuple[str, ...] = ("train/ce", "kfac/kl_scale")) -> None:
    """`keys` at every step within `rel` of the reference's: by default cross-entropy and
    K-FAC's KL scale (a function of every preconditioned gradient)."""
    for key in keys:
        for step, (a, b) in enumerate(zip(_trained(got, key), _trained(want, key), strict=True), 1):
            assert abs(a - b) <= rel * abs(b), f"step {step} {key}: {a} vs {b} (relative {abs(a - b) / abs(b):.1e})"


def kfac_states(run_dir) -> list[dict]:
    """Each rank's K-FAC state from the last checkpoint: DeepSpeed's per-rank optimizer-states
    file (``bf16_`` prefixed under bf16) holds ``KodaOptimizer.state_dict()['koda']``."""
    files = sorted((run_dir / "checkpoints" / f"step{STEPS:08d}" / "actor").glob("*optim_states.pt"))
    return [torch.load(f, weights_only=False)["optimizer_state_dict"]["optimizer_state_dict"]["koda"]["transform"]
            for f in files]


def test_layouts_see_the_same_global_batches(tiny_data):
    """The premise of the comparisons: per step, every layout's ranks' micro-batches, in rank
    then micro-batch order, are the same 8 windows as the one-rank batch."""
    from koda.data.loader import BatchLayout, TokenStream, TrainLoader
    from koda.data.shards import open_split

    stream = TokenStream(open_split(tiny_data.shards_dir, "train"))

    def batches(world, micro, accum) -> list[torch.Tensor]:        # per step [GLOBAL, SEQ + 1]
        loaders = [TrainLoader(stream, BatchLayout(SEQ, micro, accum, rank, world), seed=7) for rank in range(world)]
        return [torch.cat([b for loader in loaders for b in loader.next_batches()]) for _ in range(STEPS)]

    want = batches(*LAYOUTS["one"][:3])
    for name, (world, micro, accum, *_) in LAYOUTS.items():
        assert all(torch.equal(a, b) for a, b in zip(batches(world, micro, accum), want, strict=True)), name


def test_bf16_trains_with_fp32_factors_close_to_fp32(runs):
    """2 ranks in bf16 (ZeRO-3 + AutoEP, experts split over the ranks): finite, falling loss,
    the preconditioner ran every step and keeps its factors in fp32 (decompositions in fp64),
    and the losses follow the fp32 run's within BF16_REL."""
    got = runs["bf16"]
    ce = _trained(got, "train/ce")
    assert all(math.isfinite(x) for x in ce)
    assert ce[-1] < ce[0] and got[-1]["val/loss"] < got[0]["val/loss"]
    kl = _trained(got, "kfac/kl_scale")
    assert all(0 < s <= 1 for s in kl) and min(kl) < 1, kl             # the KL clip read Σ ĝ·g
    states = kfac_states(runs.run_dir("bf16"))
    assert len(states) == 2
    for state in states:
        assert state["steps"] == STEPS
        assert any(".experts.w" in name for name in state["units"])
        for name, unit in state["units"].items():
            assert unit["A"].dtype == unit["S"].dtype == torch.float32, name
            assert {v.dtype for k, v in unit.items() if k not in ("A", "S", "seen")} == {torch.float64}, name
    assert_same_trajectory(got, runs["one"], BF16_REL, keys=("train/ce",))


def test_accumulated_micro_batches_equal_one_micro_batch_of_both(runs):
    """2 accumulated micro-batches of 4 give the one batch of 8 its losses step by step: the
    factors sum both micro-batches' statistics (the loss DeepSpeed scales by 1/2 makes each
    output gradient that of the batch of 8) before the boundary folds them in."""
    assert_same_trajectory(runs["accumulated"], runs["one"], FP32_REL)


def test_expert_data_parallel_group_of_two_equals_one_rank(runs):
    """4 ranks, expert-parallel 2: each expert lives on two ranks (its expert-data-parallel
    group) and gets rows from the two ranks of its expert-parallel group. Its statistics summed
    over the EDP group, the token count times ep, give one rank's K-FAC of the same batch."""
    assert_same_trajectory(runs["edp2"], runs["one"], FP32_REL)


def test_koda_launch_applies_each_ranks_latency_scales(tiny_data, tmp_path):
    """``koda launch`` on the loopback topology (two "nodes" on this machine) with kappa > 0:
    every rank's optimizer groups carry the ``latency_scales`` of its placed rank, as its first
    logged step reports. Two slots per node (the file has one): the 4 ranks keep the file's
    expert-parallel size 2 with each expert replicated on both nodes, so the experts'
    all-reduce has a latency of its own, unlike the dense one over all 4 ranks. With one slot
    an expert's group is its own rank and its scale exactly 1, which an unapplied scale matches."""
    from koda.optim.latency import latency_scales
    from koda.topology import load_topology, place

    doc = yaml.safe_load((REPO / "launchers/topologies/loopback-2node.yaml").read_text())
    doc["slots_per_host"] = 2
    topology_file = tmp_path / "loopback-2x2.yaml"
    topology_file.write_text(yaml.safe_dump(doc))
    kappa, steps = 0.01, 2
    config = write_run_config(tmp_path / "run.yaml", tiny_data, tmp_path / "run", steps=steps, world_size=4,
                              ds={"bf16": {"enabled": False}, "train_micro_batch_size_per_gpu": 2,
                                  "expert_parallel": {"enabled": True, "autoep_size": 2, "use_grouped_mm": False}},
                              optimizer={**KFAC, "kappa": kappa, "topology": str(topology_file)},
                              train={"eval_batches": 1})
    proc = subprocess.run(launch_command(topology_file, tmp_path / "hostfile", "--config", config), cwd=tmp_path,
                          env=rank_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    first = records(tmp_path / "run")[1]
    assert "kfac/kl_scale" in first
    topology = load_topology(topology_file)
    want = [latency_scales(topology, place(topology), rank, kappa) for rank in range(4)]
    assert all(0 < s.dense < 1 and 0 < s.expert < 1 and s.dense != s.expert for s in want)
    assert first["optim/latency_scale/dense"] == [s.dense for s in want]
    assert first["optim/latency_scale/expert"] == [s.expert for s in want]
