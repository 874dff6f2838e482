"""Pieces of the reinforcement-learning stage that need no engine: the rollout record, the
running advantage statistics and the reward components. The trainer assembles them."""
