"""Checkpoints outside training: standalone model directories and ZeRO-3/AutoEP conversion.

``load_standalone`` and ``save_standalone`` need neither DeepSpeed nor a GPU;
``convert_checkpoint`` (``koda convert``) reads DeepSpeed's files and so imports
DeepSpeed, but only when called.
"""

from koda.checkpoint.export import ExportSummary, save_standalone
from koda.checkpoint.standalone import StandaloneConfig, load_standalone, read_config

__all__ = ["ExportSummary", "StandaloneConfig", "convert_checkpoint", "load_standalone", "read_config",
           "save_standalone"]


def __getattr__(name: str):
    if name == "convert_checkpoint":
        from koda.checkpoint.convert import convert_checkpoint

        return convert_checkpoint
    raise AttributeError(f"module 'koda.checkpoint' has no attribute {name!r}")
