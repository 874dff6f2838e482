"""Suite-wide settings: every test runs on the CPU accelerator with debug-size models."""

import os

# DeepSpeed picks its accelerator at import time; tests never touch a GPU, so CI and GPU
# machines behave the same.
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("WANDB_MODE", "disabled")
