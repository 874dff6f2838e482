import pytest

from koda.errors import ConfigError
from koda.rl.config import RLConfig
from koda.rl.rewards import RewardWeights
from koda.train import config as run_config


def _raw(**rl):
    return {"model": {"preset": "smoke"}, "ds_config": "x.json", "run_dir": "runs/x", "rl": rl}


def test_rl_section_loads_with_nested_reward_weights_and_overrides():
    cfg = run_config.from_dict(_raw(advantage="grpo", clip=None, rewards={"tests": 2.0, "failure": -3.0}))
    assert cfg.rl.advantage == "grpo" and cfg.rl.clip is None and not cfg.rl.uses_critic
    assert cfg.rl.rewards == RewardWeights(tests=2.0, failure=-3.0)
    raw = _raw()
    run_config._apply_override(raw, "rl.rewards.poincare=0.5")
    run_config._apply_override(raw, "rl.lvw=0")
    cfg = run_config.from_dict(raw)
    assert cfg.rl.rewards.poincare == 0.5 and not cfg.rl.uses_encoder
    assert run_config.from_dict(_raw()).rl == RLConfig()
    assert run_config.from_dict({**_raw(), "rl": cfg.to_dict()["rl"]}).rl == cfg.rl    # to_dict round trip


@pytest.mark.parametrize("rl, message", [
    ({"advantage": "ppo"}, "rl.advantage must be one of gae, grpo, rloo, got 'ppo'"),
    ({"advantage": "rloo", "samples_per_prompt": 1}, "needs rl.samples_per_prompt >= 2"),
    ({"lam": 1.5}, r"rl.lam must be <= 1, got 1.5"),
    ({"clip": 0}, "rl.clip must be > 0 or null"),
    ({"lce": 0, "lrl": 0, "lvw": 0}, "nothing would be trained"),
    ({"n_critic": 2.5}, "rl.n_critic must be an integer"),
    ({"kl_in": "both"}, "rl.kl_in must be 'reward' or 'loss'"),
    ({"rewards": {"test": 1.0}}, "rl.rewards: unknown key 'test'"),
    ({"rewards": {"similarity": -0.1}}, "rl.rewards.similarity must be >= 0"),
    ({"gp_lamda": 10}, "rl: unknown key 'gp_lamda' \\(did you mean 'gp_lambda'\\?\\)"),
])
def test_bad_rl_values_are_one_line_errors(rl, message):
    with pytest.raises(ConfigError, match=message):
        run_config.from_dict(_raw(**rl))
