"""The module protocol callbacks use to attack any LightningModule.

docs/architecture.md, "Module protocol". A module may define any of these methods; callbacks fall
back to the defaults below (``(inputs, target)`` batches, cross-entropy on logits), so a plain
user LightningModule works unchanged::

    def attack_inputs(self, batch) -> Tensor                       # what to perturb
    def attack_loss(self, inputs, batch) -> Tensor                 # (B,) loss to maximise
    def with_adversarial_inputs(self, batch, inputs_adv) -> batch  # put them back
    def prediction_correct(self, inputs, batch) -> Tensor          # (B,) bool, for evaluation

``prediction_correct`` extends the three methods of docs/architecture.md so robustness evaluation can score
modules whose notion of "correct" is not argmax-equals-label.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping, MutableSequence, Sequence
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "AdversarialMixin",
    "PROTOCOL_METHODS",
    "batch_size_of",
    "index_batch",
    "logits_of",
    "protocol_method",
    "split_batch",
]

_INPUT_KEYS = ("inputs", "input", "image", "images", "x")
_TARGET_KEYS = ("target", "targets", "label", "labels", "y")


def split_batch(batch: Any) -> tuple[Tensor, Tensor]:
    """``(inputs, target)`` of a ``(x, y, ...)`` sequence or a dict with common key names."""
    if isinstance(batch, Mapping):
        x_key = next((k for k in _INPUT_KEYS if k in batch), None)
        y_key = next((k for k in _TARGET_KEYS if k in batch), None)
        if x_key is not None and y_key is not None:
            return batch[x_key], batch[y_key]
        raise TypeError(
            f"cannot find inputs/targets in a dict batch with keys {sorted(batch)}; expected one "
            f"of {_INPUT_KEYS} and one of {_TARGET_KEYS}, or define attack_inputs/attack_loss "
            "on the LightningModule"
        )
    if isinstance(batch, Sequence) and not isinstance(batch, (str, bytes)) and len(batch) >= 2:
        return batch[0], batch[1]
    raise TypeError(
        f"default attack protocol expects an (inputs, target) batch, got {type(batch).__name__}; "
        "define attack_inputs/attack_loss/with_adversarial_inputs on the LightningModule"
    )


def batch_size_of(batch: Any) -> int:
    """Number of samples in ``batch`` (the first dimension of its inputs)."""
    return int(split_batch(batch)[0].shape[0])


def index_batch(batch: Any, index: Tensor, batch_size: int) -> Any:
    """Select samples ``index`` from every tensor in ``batch`` whose first dim is the batch."""
    if isinstance(batch, Tensor):
        return batch[index] if batch.dim() > 0 and batch.shape[0] == batch_size else batch
    if isinstance(batch, Mapping):
        return {k: index_batch(v, index, batch_size) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        items = [index_batch(v, index, batch_size) for v in batch]
        # namedtuples (what default_collate makes of namedtuple samples) take positional fields
        return type(batch)(*items) if hasattr(batch, "_fields") else type(batch)(items)
    return batch


def logits_of(module: nn.Module, inputs: Tensor, target: Tensor | None) -> Tensor:
    """``module(inputs)``, checked to be ``(B, C)`` logits (and ``target`` to be ``(B,)`` ints).

    ``target=None`` skips the target check, for attacks that query sub-batches.
    """
    logits = module(inputs)
    if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != inputs.shape[0]:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(
            f"the default attack loss expects the model to return logits of shape (B, C) = "
            f"({inputs.shape[0]}, C), got {shape}; define attack_loss(inputs, batch) on the "
            "LightningModule for other outputs"
        )
    if target is not None:
        check_class_targets(inputs, target)
    return logits


def check_class_targets(inputs: Tensor, target: Tensor) -> None:
    """Raise a clear error unless ``target`` holds one integer class per input."""
    if not isinstance(target, Tensor) or target.shape != (inputs.shape[0],) or target.dtype not in (
        torch.int64, torch.int32
    ):
        raise ValueError(
            f"the default attack loss expects integer class targets of shape ({inputs.shape[0]},), "
            f"got {target.dtype} {tuple(target.shape)}"
        )


def default_attack_inputs(module: nn.Module, batch: Any) -> Tensor:
    return split_batch(batch)[0]


def default_attack_loss(module: nn.Module, inputs: Tensor, batch: Any) -> Tensor:
    target = split_batch(batch)[1]
    logits = logits_of(module, inputs, target)
    return F.cross_entropy(logits.float(), target.long(), reduction="none")


def default_with_adversarial_inputs(module: nn.Module, batch: Any, inputs_adv: Tensor) -> Any:
    split_batch(batch)  # raises a clear error for unsupported batches (dicts included)
    if isinstance(batch, Mapping):
        x_key = next(k for k in _INPUT_KEYS if k in batch)
        return {**batch, x_key: inputs_adv}
    if isinstance(batch, list):
        return type(batch)([inputs_adv, *batch[1:]])
    if hasattr(batch, "_fields"):  # a namedtuple keeps its type
        return type(batch)(inputs_adv, *batch[1:])
    return (inputs_adv, *batch[1:])


@torch.no_grad()
def default_prediction_correct(module: nn.Module, inputs: Tensor, batch: Any) -> Tensor:
    target = split_batch(batch)[1]
    return logits_of(module, inputs, target).argmax(dim=1) == target


_DEFAULTS: dict[str, Callable[..., Any]] = {
    "attack_inputs": default_attack_inputs,
    "attack_loss": default_attack_loss,
    "with_adversarial_inputs": default_with_adversarial_inputs,
    "prediction_correct": default_prediction_correct,
}
PROTOCOL_METHODS = tuple(_DEFAULTS)


def protocol_method(module: nn.Module, name: str) -> Callable[..., Any]:
    """The module's own protocol method ``name`` if it defines one, else the default."""
    if name not in _DEFAULTS:
        raise KeyError(f"unknown protocol method {name!r}; one of {PROTOCOL_METHODS}")
    method = getattr(module, name, None)
    return method if callable(method) else partial(_DEFAULTS[name], module)


def replace_batch_contents(batch: Any, new_batch: Any) -> None:
    """Make the container ``batch`` hold ``new_batch``'s items, in place.

    Lightning passes the same batch object to ``on_train_batch_start`` and then to
    ``training_step``, so mutating the container is how a callback hands over adversarial
    inputs. Tensors are never written into, so data owned by a Dataset is never corrupted.
    """
    if batch is new_batch:
        return
    if isinstance(batch, MutableSequence) and isinstance(new_batch, Sequence):
        batch[:] = list(new_batch)
        return
    if isinstance(batch, MutableMapping) and isinstance(new_batch, Mapping):
        batch.clear()
        batch.update(new_batch)
        return
    raise TypeError(
        f"cannot hand adversarial inputs to training_step through an immutable "
        f"{type(batch).__name__} batch; have the DataLoader's collate_fn return a list or dict "
        "(PyTorch's default collate does)"
    )


class AdversarialMixin:
    """Default protocol for ``(inputs, target)`` batches and logits models; override what differs."""

    def attack_inputs(self, batch: Any) -> Tensor:
        return default_attack_inputs(self, batch)  # type: ignore[arg-type]

    def attack_loss(self, inputs: Tensor, batch: Any) -> Tensor:
        return default_attack_loss(self, inputs, batch)  # type: ignore[arg-type]

    def with_adversarial_inputs(self, batch: Any, inputs_adv: Tensor) -> Any:
        return default_with_adversarial_inputs(self, batch, inputs_adv)  # type: ignore[arg-type]

    def prediction_correct(self, inputs: Tensor, batch: Any) -> Tensor:
        return default_prediction_correct(self, inputs, batch)  # type: ignore[arg-type]
