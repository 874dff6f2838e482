"""Direct feedback alignment: exact gradients, isolation of blocks, fixed feedback, the
backprop path untouched, the alignment diagnostic and the config checks."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from koda.config import run as run_config
from koda.errors import ConfigError
from koda.model import KodaForCausalLM
from koda.model.config import ModelConfig
from koda.objectives import next_token_loss
from koda.pretrain.dfa import DirectFeedback, alignment, feedback_matrices, measure_alignment

SMALL = ModelConfig(vocab_size=64, d_model=32, n_layers=3, n_heads=2, n_kv_heads=1, ffn_hidden=24,
                    n_experts=4, top_k=2, moe_every=2, dense_ffn_hidden=40, max_seq_len=16)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny matmuls: two threads only contend (50x slower on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(seed: int = 0) -> KodaForCausalLM:
    torch.manual_seed(seed)
    return KodaForCausalLM(SMALL).double()


def _batch(seed: int = 1) -> torch.Tensor:
    return torch.randint(0, SMALL.vocab_size, (2, 9), generator=torch.Generator().manual_seed(seed))


def _loss(model, batch):
    return next_token_loss(model(batch[:, :-1]), batch[:, 1:])


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


class _Tanh(nn.Module):
    def __init__(self, d_in, d_out):
        super().__init__()
        self.linear = nn.Linear(d_in, d_out)

    def forward(self, x):
        return torch.tanh(self.linear(x))


def test_two_layer_net_matches_hand_computation():
    torch.manual_seed(0)
    n, d_in, d, classes = 5, 3, 4, 6
    blocks = [_Tanh(d_in, d).double(), _Tanh(d, d).double()]
    top, head = nn.Identity(), nn.Linear(d, classes, bias=False).double()
    dfa = DirectFeedback(None, blocks, top, d, seed=7, scale=0.5)
    x, y = torch.randn(n, d_in, dtype=torch.float64), torch.randint(0, classes, (n,))
    F.cross_entropy(head(top(blocks[1](blocks[0](x)))), y).backward()

    with torch.no_grad():
        b0, b1 = (b.double() for b in feedback_matrices(2, d, seed=7, scale=0.5))
        h1 = torch.tanh(blocks[0].linear(x))
        h2 = torch.tanh(blocks[1].linear(h1))
        dlogits = (F.softmax(head(h2), -1) - F.one_hot(y, classes)) / n    # dL/dlogits [n, C]
        e = dlogits @ head.weight                                           # dL/dh2 [n, D]
        d1 = (e @ b0.t()) * (1 - h1 ** 2)                                  # block 0 gets B_0 e
        d2 = (e @ b1.t()) * (1 - h2 ** 2)                                  # block 1 gets B_1 e, not e
    for block, delta, inp in ((blocks[0], d1, x), (blocks[1], d2, h1)):
        torch.testing.assert_close(block.linear.weight.grad, delta.t() @ inp, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(block.linear.bias.grad, delta.sum(0), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(head.weight.grad, dlogits.t() @ h2, rtol=1e-12, atol=1e-14)   # true gradient
    assert dfa.matrices[0].shape == (d, d)


def test_each_block_gets_exactly_its_feedback_in_the_transformer():
    """Block l's DFA gradient = the local vector-Jacobian product of its output with B_l e,
    where e is the true gradient at the final norm's input."""
    plain, model = _model(), _model()
    batch = _batch()
    inputs, top = {}, {}

    def keep_input(i):
        def hook(_m, args):
            inputs[i] = args
        return hook

    handles = [layer.register_forward_pre_hook(keep_input(i)) for i, layer in enumerate(plain.model.layers)]
    handles.append(plain.model.norm.register_forward_pre_hook(lambda _m, a: top.setdefault("x", a[0])))
    loss = _loss(plain, batch)
    top_x = top["x"]
    top_x.retain_grad()
    loss.backward()
    e = top_x.grad                                                           # [B, S, D]
    for h in handles:
        h.remove()

    dfa = DirectFeedback.for_causal_lm(model, seed=3, scale=1.0)
    _loss(model, batch).backward()
    b = [m.double() for m in dfa.matrices]
    for i, layer in enumerate(plain.model.layers):
        x, *rest = inputs[i]
        params = list(layer.parameters())
        expected = torch.autograd.grad(layer(x.detach(), *rest), params, grad_outputs=e @ b[i + 1].t(),
                                       allow_unused=True)
        for (name, p), want in zip(model.model.layers[i].named_parameters(), expected, strict=True):
            want = torch.zeros_like(p) if want is None else want      # an expert no token chose
            torch.testing.assert_close(p.grad, want, rtol=1e-9, atol=1e-12, msg=f"layer {i} {name}")
    emb = torch.zeros_like(model.model.embed_tokens.weight).index_add_(
        0, batch[:, :-1].reshape(-1), (e @ b[0].t()).reshape(-1, SMALL.d_model))
    torch.testing.assert_close(model.model.embed_tokens.weight.grad, emb, rtol=1e-9, atol=1e-12)
    for name in ("lm_head.weight", "model.norm.weight"):                # above e: the true gradient
        torch.testing.assert_close(dict(model.named_parameters())[name].grad,
                                   dict(plain.named_parameters())[name].grad, rtol=1e-12, atol=1e-14)


def test_no_true_gradient_reaches_a_block_from_the_blocks_above():
    model, plain = _model(), _model()
    dfa = DirectFeedback.for_causal_lm(model, seed=3, scale=1.0)
    dfa.matrices[0].zero_()                  # embedding and block 0 get zero feedback ...
    dfa.matrices[1].zero_()
    _loss(model, _batch()).backward()
    _loss(plain, _batch()).backward()
    for name, p in model.named_parameters():
        if name.startswith(("model.embed_tokens.", "model.layers.0.")):
            # ... so anything non-zero there leaked from above
            assert p.grad is None or not p.grad.any(), name
            assert dict(plain.named_parameters())[name].grad.any(), name
    assert model.model.layers[1].self_attn.q_proj.weight.grad.any()


def test_the_error_is_captured_before_any_block_gradient():
    model = _model()
    dfa = DirectFeedback.for_causal_lm(model, seed=3, scale=1.0)
    dfa.events = []
    for name, p in model.named_parameters():
        p.register_hook(lambda g, name=name: dfa.events.append(name))
    _loss(model, _batch()).backward()
    first_error = dfa.events.index("error")
    assert dfa.events.count("error") == 1
    below = [i for i, ev in enumerate(dfa.events) if ev.startswith(("model.layers.", "model.embed_tokens."))]
    above = [i for i, ev in enumerate(dfa.events) if ev.startswith(("lm_head.", "model.norm."))]
    assert below and min(below) > first_error
    assert above and max(above) < first_error


def test_feedback_is_seeded_fixed_and_outside_the_checkpoint():
    a, b = feedback_matrices(3, 256, seed=5, scale=2.0), feedback_matrices(3, 256, seed=5, scale=2.0)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], feedback_matrices(3, 256, seed=6, scale=2.0)[0])
    assert not torch.equal(a[0], a[1])                                 # one draw per slot
    assert abs(float(a[0].std()) - 2.0 / math.sqrt(256)) < 0.05 * 2.0 / math.sqrt(256)

    model, plain = _model(), _model()
    dfa = DirectFeedback.for_causal_lm(model, seed=5, scale=1.0)
    before = [m.clone() for m in dfa.matrices]
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for step in range(3):
        opt.zero_grad()
        _loss(model, _batch(step)).backward()
        opt.step()
    assert all(torch.equal(x, y) for x, y in zip(before, dfa.matrices, strict=True))
    assert model.state_dict().keys() == plain.state_dict().keys()
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in plain.parameters())


def test_backprop_mode_is_bit_identical():
    plain, model = _model(), _model()
    dfa = DirectFeedback.for_causal_lm(model, seed=3, scale=1.0)
    batch = _batch()
    assert torch.equal(model(batch), plain(batch))                   # DFA changes no forward value
    dfa.enabled = False
    _loss(plain, batch).backward()
    _loss(model, batch).backward()
    want = _grads(plain)
    assert all(torch.equal(g, want[n]) for n, g in _grads(model).items()) and _grads(model).keys() == want.keys()
    assert run_config.ScheduleConfig().feedback == "backprop"


def test_alignment_is_the_cosine_of_each_slots_concatenated_gradients():
    names = ["model.embed_tokens.weight", "model.layers.0.a", "model.layers.0.b", "model.layers.1.a",
             "lm_head.weight"]
    gen = torch.Generator().manual_seed(0)
    dfa = {n: torch.randn(3, 2, generator=gen) for n in names}
    bp = {n: torch.randn(3, 2, generator=gen) for n in names}
    out = alignment(dfa, bp, names)

    def cos(keys):
        a = torch.cat([dfa[k].reshape(-1) for k in keys]).double()
        b = torch.cat([bp[k].reshape(-1) for k in keys]).double()
        return float(a @ b / (a.norm() * b.norm()))
    want = {"dfa/embedding/alignment": cos(names[:1]), "dfa/layer0/alignment": cos(names[1:3]),
            "dfa/layer1/alignment": cos(names[3:4])}
    assert out.keys() == {*want, "dfa/alignment"}                      # the head is not a DFA slot
    for key, value in want.items():
        assert out[key] == pytest.approx(value, abs=1e-12)
    assert out["dfa/alignment"] == pytest.approx(sum(want.values()) / 3, abs=1e-12)
    assert alignment(bp, bp, names)["dfa/alignment"] == pytest.approx(1.0)


class _PlainEngine:
    """The calls measure_alignment makes on koda.distributed.engine.Engine, on a plain module."""

    def __init__(self, module):
        self.module = module

    def __call__(self, x):
        return self.module(x)

    def backward(self, loss):
        loss.backward()

    def gradients(self):
        params = dict(self.module.named_parameters())

        class Access:
            names = params.__iter__

            @staticmethod
            def get(name):
                return params[name].grad.clone()
        return Access()

    def discard_gradients(self):
        self.module.zero_grad(set_to_none=True)


def test_measure_alignment_compares_both_gradients_of_one_batch_and_leaves_none():
    model, plain = _model(), _model()
    dfa = DirectFeedback.for_causal_lm(model, seed=3, scale=1.0)
    batch = _batch()
    out = measure_alignment(_PlainEngine(model), dfa, lambda: _loss(model, batch))
    assert dfa.enabled and all(p.grad is None for p in model.parameters())

    _loss(plain, batch).backward()
    bp = _grads(plain)
    _loss(model, batch).backward()                                     # DFA on
    names = list(bp)
    assert out == pytest.approx(alignment(_grads(model), bp, names), abs=1e-9)
    assert -1 <= out["dfa/layer2/alignment"] <= 1 and out["dfa/layer2/alignment"] != pytest.approx(1.0)


BASE = {"model": {"preset": "smoke"}, "ds_config": "zero3_ep_smoke.json", "run_dir": "runs/x"}


@pytest.mark.parametrize("train, message", [
    ({"feedback": "fa"}, r"train.feedback must be backprop or dfa, got 'fa'"),
    ({"dfa_scale": 0}, r"train.dfa_scale must be a finite number > 0, got 0"),
    ({"dfa_scale": float("nan")}, r"train.dfa_scale must be a finite number > 0, got nan"),
    ({"dfa_scale": "big"}, r"train.dfa_scale must be a finite number > 0, got 'big'"),
    ({"dfa_seed": -1}, r"train.dfa_seed must be a non-negative integer, got -1"),
    ({"dfa_align_every": -2}, r"train.dfa_align_every must be a non-negative integer \(0: never\), got -2"),
    ({"dfa_sede": 1}, r"train: unknown key 'dfa_sede' \(did you mean 'dfa_seed'\?\)"),
])
def test_config_errors_are_one_line(train, message):
    with pytest.raises(ConfigError, match=message) as err:
        run_config.from_dict({**BASE, "train": train})
    assert "\n" not in str(err.value)


def test_config_override_and_rl_stage_refusal(tmp_path):
    from koda.train.cli import validate

    path = tmp_path / "run.yaml"
    path.write_text(f"model: {{preset: smoke}}\nds_config: zero3_ep_smoke.json\nrun_dir: {tmp_path / 'run'}\n")
    cfg = run_config.load(str(path), ["train.feedback=dfa", "train.dfa_scale=0.5"])
    assert (cfg.train.feedback, cfg.train.dfa_scale, cfg.train.dfa_seed) == ("dfa", 0.5, 0)
    with pytest.raises(ConfigError, match=r"^train.dfa_scale is read by --stage pretrain only; --stage rl would"):
        validate(cfg, 2, resuming=False, stage="rl")
