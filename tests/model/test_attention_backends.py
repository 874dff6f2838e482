"""Attention backends: FAVOR+ against exact softmax attention, causality, features, redraws;
flash / auto selection on a CPU-only machine; FAVOR+ in a whole model (cache, padding, training)."""

import importlib.util

import pytest
import torch
import torch.nn.functional as F

from koda.checkpoint import hf_mixtral
from koda.errors import ConfigError, KodaError
from koda.model import KodaForCausalLM
from koda.model.favor import (
    FavorCore,
    FavorState,
    causal_linear_attention,
    draw_features,
    feature_logits,
    quadratic_reference,
    query_features,
    set_training_step,
)
from tests.helpers.tiny import TINY

FAVOR = TINY.replace(attention="favor", favor_features=128)


def _qkv(seed, B=1, H=2, Hkv=2, S=96, d=32, dtype=torch.float32, sigma=0.5):
    """q, k with |q|^2 ~ sigma^2 d (8 at sigma 0.5, d 32): FAVOR+'s variance grows as exp(|q + k|^2 / sqrt(d)),
    so unit-variance q, k (norm^2 32) need tens of thousands of features; see docs/attention.md."""
    g = torch.Generator().manual_seed(seed)
    return (sigma * torch.randn(B, H, S, d, generator=g, dtype=dtype),
            sigma * torch.randn(B, Hkv, S, d, generator=g, dtype=dtype),
            torch.randn(B, Hkv, S, d, generator=g, dtype=dtype))


def _favor(m, H=2, Hkv=2, d=32, seed=0, redraw=0):
    return FavorCore(H, Hkv, d, m, redraw, seed, layer=0, chunk=32)


def _cosine(a, b):
    return F.cosine_similarity(a.flatten(1), b.flatten(1)).mean().item()


def test_favor_approaches_softmax_attention_as_features_grow():
    errors = {}
    for m in (16, 128, 2048):
        errs, cos = [], []
        for seed in range(3):
            q, k, v = _qkv(seed)
            exact = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            approx = _favor(m, seed=seed)(q, k, v)
            errs.append(((approx - exact).norm() / exact.norm()).item())
            cos.append(_cosine(approx, exact))
        errors[m] = sum(errs) / len(errs)
        if m == 2048:
            assert min(cos) > 0.99, cos
    assert errors[16] > errors[128] > errors[2048], errors


def test_prefix_sum_form_equals_quadratic_form_of_the_same_kernel():
    q, k, v = _qkv(1, S=70, d=16, dtype=torch.float64)
    w = draw_features(48, 16, seed=3, layer=1, draw=0).double()
    s = 16 ** -0.25
    state = FavorState(1, 2, 48, 16, "cpu")
    state.kv, state.z, state.stab = state.kv.double(), state.z.double(), state.stab.double()
    chunked = causal_linear_attention(query_features(q * s, w)[:, :, None], feature_logits(k * s, w), v, state,
                                      chunk=16)[:, :, 0]                                # 5 chunks, the last partial
    torch.testing.assert_close(chunked, quadratic_reference(q, k, v, w), rtol=1e-10, atol=1e-12)


def test_grouped_kv_heads_match_the_reference_with_repeated_heads():
    q, k, v = _qkv(2, H=4, Hkv=2, S=50, d=16)
    core = _favor(32, H=4, Hkv=2, d=16)
    w = core.weights(torch.device("cpu"))
    expected = quadratic_reference(q.double(), k.repeat_interleave(2, 1).double(), v.repeat_interleave(2, 1).double(),
                                   w.double())
    torch.testing.assert_close(core(q, k, v).double(), expected, rtol=1e-4, atol=1e-5)


def test_a_later_token_leaves_earlier_outputs_unchanged():
    q, k, v = _qkv(3, S=80)
    core = _favor(64)
    base = core(q, k, v)
    for t in (10, 40, 63):                               # inside a chunk and at a chunk's edge
        q2, k2, v2 = q.clone(), k.clone(), v.clone()
        q2[:, :, t + 1] += 3.0
        k2[:, :, t + 1] += 3.0                           # a large key: raises the running stabiliser
        v2[:, :, t + 1] -= 5.0
        out = core(q2, k2, v2)
        torch.testing.assert_close(out[:, :, :t + 1], base[:, :, :t + 1], rtol=1e-5, atol=1e-6)
        assert not torch.allclose(out[:, :, t + 1:], base[:, :, t + 1:], atol=1e-3)


def test_features_come_in_orthogonal_blocks_from_the_seed():
    w = draw_features(80, 32, seed=5, layer=2, draw=0)
    assert w.shape == (80, 32)
    unit = w / w.norm(dim=1, keepdim=True)
    for start in (0, 32, 64):
        block = unit[start:start + 32]
        torch.testing.assert_close(block @ block.T, torch.eye(len(block)), atol=1e-5, rtol=0)
    across = unit[:32] @ unit[32:64].T                   # independent blocks are not orthogonal to each other
    assert across.abs().max() > 0.3
    torch.testing.assert_close(w, draw_features(80, 32, seed=5, layer=2, draw=0), rtol=0, atol=0)
    assert not torch.allclose(w, draw_features(80, 32, seed=5, layer=3, draw=0))


def test_redraw_changes_features_only_at_the_interval():
    core = _favor(32, redraw=3)
    seen = []
    for step in range(7):
        core.set_step(step)
        seen.append(core.weights(torch.device("cpu")).clone())
    same = [torch.equal(seen[i], seen[i + 1]) for i in range(6)]
    assert same == [True, True, False, True, True, False]
    fixed = _favor(32, redraw=0)
    first = fixed.weights(torch.device("cpu")).clone()
    fixed.set_step(1000)
    assert torch.equal(fixed.weights(torch.device("cpu")), first)


def test_set_training_step_reaches_every_favor_layer():
    model = KodaForCausalLM(FAVOR.replace(favor_redraw=2))
    set_training_step(model, 5)
    draws = [m.draw for m in model.modules() if isinstance(m, FavorCore)]
    assert draws == [2] * TINY.n_layers


def test_flash_requested_without_its_requirements_is_a_one_line_error(monkeypatch):
    with pytest.raises(ConfigError, match="model.attention flash: .*use sdpa or auto") as err:
        KodaForCausalLM(TINY.replace(attention="flash"))
    assert "\n" not in str(err.value)
    # pretend the package is installed: the CPU-only machine is then the reason given
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no CUDA device"):
        KodaForCausalLM(TINY.replace(attention="flash"))


def test_auto_on_cpu_is_sdpa_and_says_so():
    torch.manual_seed(0)
    auto = KodaForCausalLM(TINY.replace(attention="auto")).eval()
    torch.manual_seed(0)
    sdpa = KodaForCausalLM(TINY).eval()
    assert "backend=sdpa" in repr(auto) and "backend=flash" not in repr(auto)
    x = torch.randint(0, TINY.vocab_size, (2, 12))
    with torch.no_grad():
        assert torch.equal(auto(x), sdpa(x))


def test_bad_attention_fields_are_config_errors():
    with pytest.raises(ConfigError, match="model.attention must be one of"):
        TINY.replace(attention="linear")
    with pytest.raises(ConfigError, match="model.favor_redraw"):
        TINY.replace(favor_redraw=-1)
    with pytest.raises(ConfigError, match="model.favor_features"):
        TINY.replace(favor_features=0)


def test_favor_state_dict_loads_strictly_into_sdpa_and_back():
    torch.manual_seed(0)
    favor = KodaForCausalLM(FAVOR)
    state = favor.state_dict()
    assert set(state) == set(KodaForCausalLM(TINY).state_dict())
    KodaForCausalLM(TINY).load_state_dict(state, strict=True)
    with torch.device("meta"):                           # how load_standalone builds it
        again = KodaForCausalLM(FAVOR)
    again.load_state_dict(state, strict=True, assign=True)
    x = torch.randint(0, TINY.vocab_size, (1, 10))
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(x), favor.eval()(x), rtol=0, atol=0)
    with pytest.raises(KodaError, match="hf-mixtral cannot carry model.attention favor"):
        hf_mixtral.check_exportable(FAVOR)


def test_favor_running_sums_decode_like_the_full_forward():
    torch.manual_seed(0)
    model = KodaForCausalLM(FAVOR).eval()
    x = torch.randint(0, TINY.vocab_size, (2, 20))
    with torch.no_grad():
        full = model(x)
        cache = model.new_cache(2, 32)
        parts = [model(x[:, :9], cache=cache), model(x[:, 9:17], cache=cache)]
        parts += [model(x[:, t:t + 1], cache=cache) for t in range(17, 20)]
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-4, rtol=1e-4)
    assert cache.states[0].kv.shape == (2, TINY.n_kv_heads, 128, TINY.head_dim)   # no growth with length
    with pytest.raises(KodaError, match="contrastive search needs a key/value cache"):
        cache.keep_alternative(20, torch.zeros(2, dtype=torch.long))


def test_favor_left_padding_gives_the_unpadded_logits_and_other_masks_are_refused():
    torch.manual_seed(0)
    model = KodaForCausalLM(FAVOR).eval()
    x = torch.randint(0, TINY.vocab_size, (1, 10))
    padded = torch.cat([torch.zeros(1, 4, dtype=torch.long), x], 1)
    keep = torch.cat([torch.zeros(1, 4, dtype=torch.bool), torch.ones(1, 10, dtype=torch.bool)], 1)
    with torch.no_grad():
        torch.testing.assert_close(model(padded, attention_mask=keep)[:, 4:], model(x), atol=1e-4, rtol=1e-4)
        full = torch.ones(1, 1, 10, 10, dtype=torch.bool)              # bidirectional: not causal
        # contrastive search's pattern: 3 candidates after 7 tokens, each sees the context and itself
        candidates = torch.cat([torch.ones(3, 7, dtype=torch.bool), torch.eye(3, dtype=torch.bool)], 1)[None, None]
        with pytest.raises(KodaError, match="favor takes only causal masks"):
            model(x, attention_mask=full, position_ids=torch.arange(10)[None])
        cache = model.new_cache(1, 16)
        model(x[:, :7], cache=cache)
        with pytest.raises(KodaError, match="favor takes only causal masks"):
            model(x[:, 7:], attention_mask=candidates, cache=cache, position_ids=torch.full((1, 3), 7))


def test_tiny_favor_model_trains():
    torch.manual_seed(0)
    model = KodaForCausalLM(FAVOR.replace(favor_features=64, favor_redraw=5))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batch = torch.randint(0, TINY.vocab_size, (2, 17))
    losses = []
    for step in range(8):
        set_training_step(model, step)
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0] - 0.3, losses
