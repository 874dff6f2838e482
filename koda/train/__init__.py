"""Pre-training: run config, the rank loop, metrics, and the ``koda train`` command."""
