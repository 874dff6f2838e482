"""Which engines the RL stage builds: only those its variant needs (no ranks, no DeepSpeed).

Every engine costs a ZeRO-3 partitioned build, an optimizer and a collective forward per
step; GRPO / RLOO need no critic, and without the WGAN term (lvw 0) nothing reads the
encoder. ``build_engine`` is replaced by a recorder, so the test sees exactly which
networks ``build_rl_engines`` asks DeepSpeed for."""

import pytest

from koda.config.rl import RLConfig
from koda.rl import engines as rl_engines
from tests.helpers.tiny import TINY


class _Engine:
    def __init__(self, name, factory):
        self.name, self.module = name, factory()

    def eval(self):
        return self


@pytest.fixture
def built(monkeypatch):
    names: list[str] = []

    def record(name, factory, plan, **kwargs):
        names.append(name)
        return _Engine(name, factory)

    monkeypatch.setattr(rl_engines, "build_engine", record)
    return names


@pytest.mark.parametrize(("rl", "expected"), [
    (RLConfig(advantage="grpo", lvw=0.0, kl_coef=0.0), ["actor"]),
    (RLConfig(advantage="rloo", lvw=0.0, kl_coef=0.0), ["actor"]),
    (RLConfig(advantage="grpo", lvw=0.0, kl_coef=0.02), ["actor", "reference"]),
    (RLConfig(advantage="grpo", lvw=0.1, kl_coef=0.0), ["actor", "encoder"]),
    (RLConfig(advantage="gae", lvw=0.0, kl_coef=0.0), ["actor", "critic"]),
    (RLConfig(advantage="gae", lrl=0.0, lvw=0.0, kl_coef=0.02), ["actor"]),       # CE alone
    (RLConfig(advantage="gae", lvw=0.1, kl_coef=0.02), ["actor", "critic", "encoder", "reference"]),
])
def test_only_the_engines_the_variant_needs_are_built(built, rl, expected):
    engines = rl_engines.build_rl_engines(TINY, {n: None for n in ("actor", "critic", "encoder", "reference")}, rl,
                                          encoder_dim=16)
    assert built == expected
    trained = [n for n in expected if n != "reference"]
    assert list(engines.items()) == trained                   # what checkpoints save and resume loads
    assert (engines.critic is None) == ("critic" not in expected)
    assert (engines.encoder is None) == ("encoder" not in expected)
    assert (engines.reference is None) == ("reference" not in expected)
