"""Optimizer/scheduler plumbing shared by the method LightningModules.

Modules take ``optimizer`` and ``lr_scheduler`` callables (LightningCLI's
``OptimizerCallable``/``LRSchedulerCallable``, so YAML picks them) and a scheduler interval;
this is the one place that turns them into ``configure_optimizers``' return value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from robust_lightning._validation import check_choice

__all__ = ["check_scheduler_interval", "optimizers_config"]


def check_scheduler_interval(interval: str) -> str:
    """``interval`` if it is ``"epoch"`` or ``"step"``.

    Raises:
        InvalidArgumentError: Naming ``scheduler_interval``.
    """
    return check_choice("scheduler_interval", interval, ("epoch", "step"))


def optimizers_config(
    params: Iterable[torch.nn.Parameter],
    optimizer_factory: Callable[[Any], torch.optim.Optimizer],
    lr_scheduler_factory: Callable[[torch.optim.Optimizer], Any] | None,
    interval: str,
) -> Any:
    """The optimizer alone, or the optimizer with its scheduler stepped every ``interval``."""
    optimizer = optimizer_factory(params)
    if lr_scheduler_factory is None:
        return optimizer
    scheduler = lr_scheduler_factory(optimizer)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}
