"""Pieces the callbacks share: leaving inference mode, autocast, running an attack, the report folder."""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers.logger import DummyLogger
from lightning_utilities.core.apply_func import apply_to_collection
from torch import Tensor

from robust_lightning.attacks.engine import AttackEngine
from robust_lightning.protocol import check_class_targets, logits_of, protocol_method, split_batch


def _clone_inference(tensor: Tensor) -> Tensor:
    return tensor.clone() if tensor.is_inference() else tensor


@contextlib.contextmanager
def grad_enabled_batch(batch: Any) -> Iterator[Any]:
    """Leave ``inference_mode`` and yield the batch with inference tensors cloned.

    Lightning validates and tests under ``torch.inference_mode``; tensors made there cannot be
    saved for backward, so attacks need ordinary copies (docs/architecture.md, "Attack context").
    """
    with torch.inference_mode(False), torch.enable_grad():
        yield apply_to_collection(batch, Tensor, _clone_inference)


def precision_context(trainer: pl.Trainer) -> contextlib.AbstractContextManager:
    """The autocast context Lightning's precision plugin uses for forward passes.

    Callback hooks run outside it, so attacks enter it themselves: under ``bf16-mixed`` the
    attack's forward/backward run in autocast while the perturbation stays in the input dtype.
    """
    return trainer.precision_plugin.forward_context()


def run_attack(attack: Any, pl_module: pl.LightningModule, batch: Any, inputs: Tensor,
               generator: torch.Generator | None, engine: AttackEngine | None = None) -> Tensor:
    """Run ``attack`` on ``inputs`` of ``batch`` through the module protocol.

    Attacks that need class logits and targets (APGD-DLR, transfer attacks) get the module's
    logits and the batch targets; every other attack maximises the protocol's ``attack_loss``.
    ``engine`` (compile, channels-last, attack precision) wraps whichever function the attack
    calls; ``None`` or an inactive engine is the plain path.
    """
    if engine is not None and engine.active:
        engine.prepare_module(pl_module)
        inputs = engine.prepare_inputs(inputs)
        if getattr(attack, "requires_logits", False):
            target = split_batch(batch)[1]
            check_class_targets(inputs, target)
            logits = engine.wrap(("logits", id(pl_module)), _logits, pl_module)
            return attack.perturb_logits(logits, inputs, target, generator=generator)
        attack_loss = protocol_method(pl_module, "attack_loss")
        return attack(engine.wrap(("loss", id(pl_module)), attack_loss, batch), inputs, generator=generator)
    if getattr(attack, "requires_logits", False):
        target = split_batch(batch)[1]
        check_class_targets(inputs, target)
        # Targeted APGD queries sub-batches, so the closure cannot check against the full target.
        return attack.perturb_logits(lambda x: logits_of(pl_module, x, None), inputs, target,
                                     generator=generator)
    attack_loss = protocol_method(pl_module, "attack_loss")
    return attack(lambda x: attack_loss(x, batch), inputs, generator=generator)


def _logits(x: Tensor, module: pl.LightningModule) -> Tensor:
    return logits_of(module, x, None)


_REPORT_DIRS: weakref.WeakKeyDictionary[pl.Trainer, Path] = weakref.WeakKeyDictionary()


def report_dir(trainer: pl.Trainer) -> Path:
    """The folder a callback writes its report files into: this run's own, never an earlier one's.

    With a logger that versions its runs (CSV, TensorBoard) it is the logger's ``log_dir``.
    Without one (``logger=False``, or ``fast_dev_run``, where Lightning swaps the loggers for a
    dummy whose ``log_dir`` is the shared ``default_root_dir``) it is a new
    ``<default_root_dir>/reports/version_<n>`` folder, created on first use and kept for the
    trainer's lifetime, so a second run never overwrites the first one's report.

    Call it on every rank: ``trainer.log_dir`` is a collective under DDP. Only rank 0 creates
    the fallback folder (only rank 0 writes reports); other ranks get ``default_root_dir``.
    """
    log_dir = trainer.log_dir
    versioned = bool(trainer.loggers) and not isinstance(trainer.loggers[0], DummyLogger)
    if versioned and log_dir is not None:
        return Path(log_dir)
    if trainer in _REPORT_DIRS:
        return _REPORT_DIRS[trainer]
    if not trainer.is_global_zero:
        return Path(trainer.default_root_dir)
    parent = Path(trainer.default_root_dir) / "reports"
    parent.mkdir(parents=True, exist_ok=True)
    taken = [int(p.name.split("_", 1)[1]) for p in parent.glob("version_*") if p.name.split("_", 1)[1].isdigit()]
    version = max(taken, default=-1) + 1
    while True:
        folder = parent / f"version_{version}"
        try:
            folder.mkdir()  # exist_ok=False: two processes never share a folder
            break
        except FileExistsError:
            version += 1
    _REPORT_DIRS[trainer] = folder
    return folder
