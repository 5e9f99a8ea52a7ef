"""``robust-lightning``: LightningCLI with the project's defaults.

* model and data in subclass mode (``class_path``/``init_args`` in configs);
* ``seed_everything`` defaults to 0;
* the resolved config is saved to the run dir and never overwrites an earlier one;
* loggers default to CSV plus Weights & Biases in offline mode (no account needed;
  ``WANDB_MODE=online`` opts in to syncing).
"""

from __future__ import annotations

import os
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

__all__ = ["RobustLightningCLI", "main"]

DEFAULT_RUN_DIR = "runs"


def default_loggers(save_dir: str = DEFAULT_RUN_DIR, name: str = "robust_lightning") -> list[dict[str, Any]]:
    """CSV first (its versioned folder is the run dir the config is saved to), then W&B."""
    return [
        {"class_path": "lightning.pytorch.loggers.CSVLogger",
         "init_args": {"save_dir": save_dir, "name": name}},
        {"class_path": "lightning.pytorch.loggers.WandbLogger",
         "init_args": {"save_dir": save_dir, "project": "robust-lightning", "offline": True}},
    ]


def _checkpoints_into_run_dir(trainer: pl.Trainer) -> None:
    """Give checkpoint callbacks without a ``dirpath`` the run's own versioned folder.

    With several loggers Lightning falls back to ``default_root_dir/checkpoints``, shared by
    every run, so a second run would overwrite the first one's ``last.ckpt``. The first
    logger's versioned ``log_dir`` is unique per run (and holds the saved config).
    """
    run_dir = trainer.log_dir
    if run_dir is None:
        return
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.dirpath is None:
            callback.dirpath = os.path.join(run_dir, "checkpoints")


class RobustLightningCLI(LightningCLI):
    """LightningCLI for robust_lightning modules, DataModules and callbacks."""

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        _checkpoints_into_run_dir(trainer)
        return trainer

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("seed_everything_default", 0)
        kwargs.setdefault("save_config_kwargs", {"overwrite": False})
        trainer_defaults = {"default_root_dir": DEFAULT_RUN_DIR, "logger": default_loggers()}
        trainer_defaults.update(kwargs.pop("trainer_defaults", None) or {})
        kwargs["trainer_defaults"] = trainer_defaults
        kwargs.setdefault("auto_configure_optimizers", False)
        super().__init__(pl.LightningModule, pl.LightningDataModule, *args, **kwargs)


def main(args: list[str] | None = None) -> RobustLightningCLI:
    """Console entry point (``robust-lightning`` and ``python -m robust_lightning``)."""
    # W&B must never try to reach the network unless the user opts in.
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    return RobustLightningCLI(args=args)


if __name__ == "__main__":
    main()
