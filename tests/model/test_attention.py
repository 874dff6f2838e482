import torch

from koda.model import KodaForCausalLM
from tests.helpers.tiny import TINY


def _model():
    torch.manual_seed(0)
    return KodaForCausalLM(TINY).eval()


def test_causal_future_tokens_do_not_change_past_logits():
    model = _model()
    x = torch.randint(0, TINY.vocab_size, (2, 20))
    y = x.clone()
    y[:, 12:] = torch.randint(0, TINY.vocab_size, (2, 8))
    with torch.no_grad():
        a, b = model(x), model(y)
    torch.testing.assert_close(a[:, :12], b[:, :12])
    assert not torch.allclose(a[:, 12:], b[:, 12:])


def test_kv_cache_matches_full_forward_including_chunked_prefill():
    model = _model()
    x = torch.randint(0, TINY.vocab_size, (2, 24))
    with torch.no_grad():
        full = model(x)
        cache = model.new_cache(2, 32)
        parts = [model(x[:, :9], cache=cache), model(x[:, 9:17], cache=cache)]
        parts += [model(x[:, t:t + 1], cache=cache) for t in range(17, 24)]
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-5)


def test_left_padding_gives_the_unpadded_logits():
    model = _model()
    x = torch.randint(0, TINY.vocab_size, (1, 10))
    padded = torch.cat([torch.zeros(1, 4, dtype=torch.long), x], 1)
    mask = torch.cat([torch.zeros(1, 4, dtype=torch.bool), torch.ones(1, 10, dtype=torch.bool)], 1)
    with torch.no_grad():
        plain = model(x)
        out = model(padded, attention_mask=mask)
    torch.testing.assert_close(out[:, 4:], plain, atol=1e-5, rtol=1e-5)
