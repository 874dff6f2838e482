"""Training objectives as pure functions of tensors; the trainer sums the terms it uses.

Today: next-token cross-entropy and the MoE balancing terms. The actor-critic and WGAN-GP
terms of the hybrid objective join here as functions of the same kind.
"""

from koda.objectives.balance import router_z_loss, switch_balance_loss
from koda.objectives.language_model import next_token_loss

__all__ = ["next_token_loss", "router_z_loss", "switch_balance_loss"]
