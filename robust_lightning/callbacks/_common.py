"""Pieces both attack callbacks need: seeded generators and leaving inference mode."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import lightning.pytorch as pl
import torch
from lightning_utilities.core.apply_func import apply_to_collection
from torch import Tensor

from robust_lightning.attacks.engine import AttackEngine
from robust_lightning.protocol import check_class_targets, logits_of, protocol_method, split_batch

# Ranks draw from distinct streams; a large odd stride keeps them from overlapping.
_RANK_SEED_STRIDE = 1_000_003


class RankGenerator:
    """A :class:`torch.Generator` on the module's device, seeded per rank, checkpointable.

    ``seed=None`` derives the seed from ``torch.initial_seed()`` (what ``seed_everything`` set),
    so runs are reproducible without the callback ever reseeding global RNGs.
    """

    def __init__(self, seed: int | None) -> None:
        self.seed = seed
        self._generator: torch.Generator | None = None
        self._pending_state: Tensor | None = None

    def base_seed(self, rank: int) -> int:
        base = torch.initial_seed() if self.seed is None else self.seed
        return (int(base) + rank * _RANK_SEED_STRIDE) % (2**63)

    def get(self, device: torch.device, rank: int) -> torch.Generator:
        if self._generator is None or torch.device(self._generator.device) != _canonical(device):
            generator = torch.Generator(device=device)
            generator.manual_seed(self.base_seed(rank))
            if self._pending_state is not None:
                generator.set_state(self._pending_state)
                self._pending_state = None
            self._generator = generator
        return self._generator

    def reset(self, device: torch.device, rank: int) -> torch.Generator:
        self._generator = None
        self._pending_state = None
        return self.get(device, rank)

    def state(self) -> Tensor | None:
        return self._generator.get_state() if self._generator is not None else self._pending_state

    def load_state(self, state: Tensor | None) -> None:
        self._generator = None
        self._pending_state = state


def _canonical(device: torch.device) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


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
