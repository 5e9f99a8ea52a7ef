"""LastCheckpoint: ``last.ckpt`` is always the newest epoch, written atomically.

Lightning 2.6's ``ModelCheckpoint(monitor=..., save_last=True)`` writes ``last.ckpt`` only in
an epoch where the top-k checkpoint was also written (``model_checkpoint.py``,
``on_validation_end``: "Only save last checkpoint if a checkpoint was actually saved in this
step"). Once the monitored metric stops improving, ``last.ckpt`` stays at the best epoch, so
``--ckpt_path last`` resumes from an older epoch and ``test --ckpt_path .../last.ckpt``
evaluates older weights. This callback writes ``last.ckpt`` at the end of every training epoch
whatever any metric does; pair it with a ``ModelCheckpoint(monitor=...)`` (without
``save_last``) for the best epoch.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from typing_extensions import override

__all__ = ["LastCheckpoint"]


class LastCheckpoint(ModelCheckpoint):
    """Write ``<dirpath>/last.ckpt`` after every training epoch (and at the end of training).

    A :class:`~lightning.pytorch.callbacks.ModelCheckpoint` with ``save_top_k=0`` and
    ``save_last=True`` whose last checkpoint does not wait for a top-k save. It keeps
    ModelCheckpoint's placement (``dirpath`` defaults to the run's ``checkpoints/`` folder; the
    CLI points it at the run's versioned folder) and its file-naming rules: a ``last.ckpt``
    this callback did not write is never overwritten or removed (a ``last-v1.ckpt`` is written
    instead). Each write goes to a temporary file that is moved over ``last.ckpt``, so a kill
    mid-write leaves the previous epoch's file intact.

    Saves happen where ModelCheckpoint's would (so the loop state resumes exactly): at the end
    of each training epoch, after that epoch's validation; when validation runs on its own
    schedule (``check_val_every_n_epoch > 1``, ``val_check_interval < 1``) also after each
    validation, and every epoch without one still at its end.

    Args:
        dirpath: folder of ``last.ckpt``; ``None`` for Lightning's default.
        save_weights_only: as in ModelCheckpoint (then the file cannot resume a run).
        verbose: log each save.
    """

    def __init__(self, dirpath: str | os.PathLike[str] | None = None, save_weights_only: bool = False,
                 verbose: bool = False) -> None:
        super().__init__(dirpath=None if dirpath is None else os.fspath(dirpath), monitor=None, save_last=True, save_top_k=0,
                         save_weights_only=save_weights_only, verbose=verbose, every_n_epochs=1,
                         enable_version_counter=True)

    @property
    @override
    def state_key(self) -> str:
        # The class name is part of the key, so a ModelCheckpoint beside it keeps its own state.
        return self._generate_state_key(save_weights_only=self.save_weights_only)

    def _save_last_now(self, trainer: pl.Trainer) -> None:
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    @override
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        """No step-based saves: epochs only."""

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._should_skip_saving_checkpoint(trainer) and not self._should_save_on_train_epoch_end(trainer):
            self._save_last_now(trainer)

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Skipped when this epoch's validation already saved at this global step.
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_last_now(trainer)

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # A run stopped between epoch ends (max_steps, a stop signal) still leaves its final
        # state; an already-saved step is not written again.
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_last_now(trainer)

    @override
    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        """Write to a temporary name beside ``filepath``, then move it over ``filepath``."""
        directory, name = os.path.split(filepath)
        # One name on every rank: the strategy writes on rank 0 only, and only rank 0 moves it.
        token = trainer.strategy.broadcast(uuid.uuid4().hex[:12])
        tmp = os.path.join(directory, f".{name}.{token}.tmp")
        try:
            super()._save_checkpoint(trainer, tmp)
            if trainer.is_global_zero:
                os.replace(tmp, filepath)
        finally:
            if trainer.is_global_zero and os.path.exists(tmp):
                os.remove(tmp)
        self._last_checkpoint_saved = filepath
        trainer.strategy.barrier("LastCheckpoint._save_checkpoint")
