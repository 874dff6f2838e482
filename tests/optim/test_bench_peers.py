"""tools/bench_optim.py's second-order peers (pytorch-optimizer's SOAP and Shampoo) build on
KODA's model, fused [E, out, in] expert tensors included, and move it through the bench's own
training loop; their state memory is counted."""

import math
from types import SimpleNamespace

import pytest
import torch

from koda.model import KodaForCausalLM
from tests.helpers.tiny import TINY
from tests.helpers.tools import load_tool

pytest.importorskip("pytorch_optimizer")


def _bench():
    return load_tool("bench_optim")


@pytest.mark.parametrize("name", ["soap", "shampoo"])
def test_peer_trains_the_model_in_the_bench_loop(name):
    bench = _bench()
    # inv_every 1: Shampoo's inverse roots start at zero, so it moves nothing before its first refresh.
    args = SimpleNamespace(seed=0, eval_every=1, inv_every=1, soap_lr=3e-3, soap_max_dim=10000, shampoo_lr=1e-3)
    g = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, TINY.vocab_size, (2, 17), generator=g) for _ in range(2)]
    val = [torch.randint(0, TINY.vocab_size, (2, 17), generator=g)]
    torch.manual_seed(args.seed)
    before = bench.evaluate(KodaForCausalLM(TINY), val)

    out = bench.run(name, args, batches, val, lambda m: bench.peer(name, m, args), cfg=TINY)

    assert [p["step"] for p in out["curve"]] == [1, 2]
    assert math.isfinite(out["final_val_loss"]) and out["final_val_loss"] != pytest.approx(before, abs=1e-6)
    params_mb = sum(p.numel() * p.element_size() for p in KodaForCausalLM(TINY).parameters()) / 2**20
    # Both keep one factor per tensor axis next to their other state: more than Adam's two moments.
    assert out["state_mb"] > 2 * params_mb


def test_unknown_peer_is_refused():
    bench = _bench()
    with pytest.raises(SystemExit, match="unknown peer 'lion'"):
        bench.peer("lion", torch.nn.Linear(2, 2), SimpleNamespace())
