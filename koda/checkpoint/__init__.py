"""Checkpoints outside training: standalone model directories and ZeRO-3/AutoEP conversion.

``load_standalone`` and ``save_standalone`` need neither DeepSpeed nor a GPU;
``convert_checkpoint`` (``koda convert``) and ``load_from_checkpoint`` (a training
checkpoint's model in this process, no files written) read DeepSpeed's files and so
import DeepSpeed, but only when called; none of them needs a GPU or ranks.
"""

from koda.checkpoint.export import ExportSummary, save_standalone
from koda.checkpoint.standalone import StandaloneConfig, load_standalone, read_config

__all__ = ["ExportSummary", "StandaloneConfig", "convert_checkpoint", "load_from_checkpoint", "load_standalone",
           "read_config", "save_standalone"]


def __getattr__(name: str):
    if name in ("convert_checkpoint", "load_from_checkpoint"):
        from koda.checkpoint import convert

        return getattr(convert, name)
    raise AttributeError(f"module 'koda.checkpoint' has no attribute {name!r}")
