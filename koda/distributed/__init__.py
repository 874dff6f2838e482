"""Everything that knows about ranks and DeepSpeed lives here, and only here.

- ``accelerator``: pick DeepSpeed's accelerator (CPU when no GPU) and its op build folder (one per
  installation) before it is imported.
- ``ds_config``: load a ``ds_configs/*.json``, check it against the model and world, fill
  the fields KODA derives (AutoEP naming, top-k, bf16 "auto", schedule length), and return
  a ``DeepSpeedPlan``: the dict plus batch layout, expert-parallel size, precision and world.
- ``construct``: build a network under ``zero.Init`` so each rank holds only its share.
- ``engine``: the one place ``deepspeed.initialize`` is called (``build_engine`` from a model
  factory and a plan); the ``Engine`` handle the trainer (and later the critic and encoder) use.
- ``gradients``: read and rewrite ZeRO-3 partitioned gradients between backward and step.
- ``checkpoint``: crash-safe checkpoints of several engines with KODA's own state beside
  DeepSpeed's; ``universal``: resuming one on another world size.
- ``comm``: the few collectives the trainer needs for metrics.
- ``rollout``: generation from the live actor for RL: gather once per phase into a
  hook-free replica, decode all ranks in lockstep (``koda.infer.lockstep``).
- ``local_launch``: the one builder of local DeepSpeed launcher commands, and the front
  process that forwards stop signals to the ranks; ``preemption``: the ranks' side.
"""
