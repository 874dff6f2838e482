"""Two gloo ranks, each with half of every batch and gradients averaged as data parallelism
does: the preconditioned gradients equal the one-process run on the whole batch (fp32)."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from koda.optim import KFACPreconditioner, ParamGrads
from tests.helpers.kfac_settings import textbook

CFG = textbook(inv_update_steps=2, factor_decay=0.7, kl_clip=1e-3)
# auto with its fp32 bound lowered to a condition number of ~34 (AUTO_ERROR x 2^24): two of the
# MLP's three units (cond ~40 and ~120) are refined in fp64 by their owner, one (~30) stays fp32,
# and every rank must receive each in its owner's dtype
AUTO = textbook(inv_update_steps=2, factor_decay=0.7, kl_clip=1e-3, inverse_dtype="auto", damping=1e-4)
AUTO_ERROR = 2e-6
CONFIGS = {"float64": (CFG, 1e-5), "auto": (AUTO, 1e-4)}
STEPS = 3


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 10), nn.Tanh(), nn.Linear(10, 5))


def _batch(step):
    g = torch.Generator().manual_seed(step)
    return torch.randn(8, 3, 6, generator=g), torch.randint(0, 5, (8, 3), generator=g)


def _train(model, pre, rows, average):
    """STEPS steps of K-FAC + plain SGD; returns the preconditioned gradients of each step."""
    out = []
    for step in range(STEPS):
        x, y = _batch(step)
        model.zero_grad()
        logits = model(x[rows])
        F.cross_entropy(logits.reshape(-1, 5), y[rows].reshape(-1)).backward()
        average(model)
        pre.step(ParamGrads(model))
        out.append([p.grad.clone() for p in model.parameters()])
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.1 * p.grad
    return out


def _rank(rank, path, port, config):
    from koda.optim.data_parallel import DataParallelKFAC

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)

    def average(model):
        for p in model.parameters():
            dist.all_reduce(p.grad)
            p.grad /= 2

    model = _mlp()
    DataParallelKFAC.AUTO_FP32_ERROR = AUTO_ERROR
    pre = DataParallelKFAC(model, CONFIGS[config][0], lr=0.1)
    grads = _train(model, pre, slice(rank * 4, rank * 4 + 4), average)
    torch.save(grads, f"{path}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("config", list(CONFIGS))
def test_two_ranks_equal_one_process(tmp_path, config, monkeypatch):
    cfg, tol = CONFIGS[config]
    monkeypatch.setattr(KFACPreconditioner, "AUTO_FP32_ERROR", AUTO_ERROR)
    with socket.socket() as s:                            # a free port for the two ranks to meet
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_rank, args=(str(tmp_path), port, config), nprocs=2)
    model = _mlp()
    pre = KFACPreconditioner(model, cfg, lr=0.1)
    expected = _train(model, pre, slice(0, 8), lambda m: None)
    if config == "auto":
        dtypes = {u.decomposition["inv_a"].dtype for u in pre.units}
        assert dtypes == {torch.float32, torch.float64}, dtypes
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        for step, (g_step, e_step) in enumerate(zip(got, expected, strict=True)):
            for g, e in zip(g_step, e_step, strict=True):
                torch.testing.assert_close(g, e, rtol=tol, atol=tol * e.abs().max().item(),
                                           msg=lambda m, r=rank, s=step: f"rank {r} step {s}: {m}")
