"""Training objectives as pure functions of tensors; the trainer sums the terms it uses.

Cross-entropy and the MoE balancing terms; the actor-critic terms (policy, value,
advantages) and the WGAN-GP terms (critic, gradient penalty, generator, Gumbel-softmax
relaxation) of the hybrid objective.
"""

from koda.objectives.advantages import gae, group_advantages, token_rewards
from koda.objectives.balance import router_z_loss, switch_balance_loss
from koda.objectives.gumbel import gumbel_softmax
from koda.objectives.language_model import next_token_loss
from koda.objectives.masking import masked_mean
from koda.objectives.policy import PolicyLossOut, kl_penalty, policy_loss, token_entropy
from koda.objectives.value import value_loss
from koda.objectives.wgan import critic_loss, generator_loss, gradient_penalty

__all__ = ["PolicyLossOut", "critic_loss", "gae", "generator_loss", "gradient_penalty", "group_advantages",
           "gumbel_softmax", "kl_penalty", "masked_mean", "next_token_loss", "policy_loss", "router_z_loss",
           "switch_balance_loss", "token_entropy", "token_rewards", "value_loss"]
