"""Everything that knows about ranks and DeepSpeed lives here, and only here.

- ``accelerator``: pick DeepSpeed's accelerator (CPU when no GPU) before it is imported.
- ``ds_config``: load a ``ds_configs/*.json``, check it against the model and world, fill
  the fields KODA derives (AutoEP naming, top-k, bf16 "auto", schedule length), and return
  a ``DeepSpeedPlan``: the dict plus batch layout, expert-parallel size, precision and world.
- ``construct``: build a network under ``zero.Init`` so each rank holds only its share.
- ``engine``: the one place ``deepspeed.initialize`` is called (``build_engine`` from a model
  factory and a plan); the ``Engine`` handle the trainer (and later the critic and encoder) use.
- ``gradients``: read and rewrite ZeRO-3 partitioned gradients between backward and step.
- ``checkpoint``: crash-safe checkpoints with KODA's own state beside DeepSpeed's.
- ``comm``: the few collectives the trainer needs for metrics.
"""
