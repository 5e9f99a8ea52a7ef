"""Test-wide settings: offline W&B, quiet Lightning, CPU-sized thread pools."""

import os

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("PL_DISABLE_FORK", "1")
