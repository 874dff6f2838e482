"""The run config: what a user asks of a run, as typed sections validated before any rank starts.

It sits below every stage: ``koda.pretrain`` and ``koda.rl`` read their sections from it,
and nothing here imports a stage.
"""
