"""KODA: DeepSpeed ZeRO-3 + expert-parallel training of Mixture-of-Experts code models."""

__version__ = "0.1.0"
