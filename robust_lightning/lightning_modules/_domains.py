"""Named evaluation domains, shared by the modules that evaluate on several dataloaders.

A module evaluated on several dataloaders (DRSF's unseen target domains, the DDoS detector's
cross-dataset test sets) logs one metric per loader, named by ``domain_names`` or by the
DataModule's ``domain_names``; the names become metric keys and CSV columns.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl

from robust_lightning.errors import InvalidArgumentError

__all__ = ["check_domain_names", "evaluation_domain"]

_DOMAIN_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def check_domain_names(value: Any) -> list[str] | None:
    """``None`` or a list of distinct names made of letters, digits, ``_``, ``-`` and ``.``.

    Raises:
        InvalidArgumentError: Naming ``domain_names`` and what was wrong.
    """
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value):
        raise InvalidArgumentError(f"domain_names must be a list of names, got {value!r}")
    if len(set(value)) != len(value):
        raise InvalidArgumentError(f"domain_names must not repeat a name, got {list(value)}")
    bad = [name for name in value if not _DOMAIN_NAME.match(name)]
    if bad:
        raise InvalidArgumentError(f"domain_names must be letters, digits, '_', '-' or '.', got {bad}")
    return list(value)


def evaluation_domain(module: pl.LightningModule, names: Sequence[str] | None, stage: str,
                      dataloader_idx: int) -> str | None:
    """Name of evaluation dataloader ``dataloader_idx``; ``None`` when there is only one.

    ``names`` (the module's own ``domain_names``) wins over the DataModule's; without either,
    several loaders are called ``domain0``, ``domain1``, ...
    """
    if names is None and module._trainer is not None:
        names = getattr(module.trainer.datamodule, "domain_names", None)
    if names is not None:
        if dataloader_idx >= len(names):
            raise InvalidArgumentError(f"{stage} dataloader {dataloader_idx} has no name: domain_names={list(names)}")
        return str(names[dataloader_idx])
    loaders = module.trainer.num_val_batches if stage == "val" else module.trainer.num_test_batches
    return None if len(loaders) <= 1 else f"domain{dataloader_idx}"
