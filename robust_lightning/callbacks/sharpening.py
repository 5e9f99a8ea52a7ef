"""LaplacianSharpening: the preemptive image-sharpening defence as a callback.

Liang & Pun ("Efficient Preemptive Robustification with Image Sharpening") sharpen images
*before* they are exposed to an adversary: the perturbation is then crafted on, and added to,
the sharpened image. The callback applies ``clip(x - strength * lap(x), 0, 1)`` to the inputs of
every batch of the chosen stages, before the step and before any attack callback sees the
batch, so ``val/acc`` is the clean accuracy on sharpened images (the defence's cost) and
``val/robust_acc/...`` the accuracy of attacks crafted on sharpened images.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from robust_lightning.nn.sharpen import LaplacianSharpen
from robust_lightning.protocol import protocol_method, replace_batch_contents

__all__ = ["LaplacianSharpening"]

STAGES = ("train", "validate", "test", "predict")


class LaplacianSharpening(Callback):
    """Sharpen every input batch of the given stages (training-free, surrogate-free).

    Place it before :class:`RobustnessEvaluation` in the callback list.

    Args:
        strength: sharpening coefficient (0 disables).
        stages: any of ``"train"``, ``"validate"``, ``"test"``, ``"predict"``; the defence is
            preemptive, so by default it is applied where data is exposed, not in training.
    """

    def __init__(self, strength: float = 1.0, stages: Sequence[str] = ("validate", "test", "predict")) -> None:
        self.sharpen = LaplacianSharpen(strength)
        stages = [stages] if isinstance(stages, str) else list(stages)
        unknown = sorted(set(stages) - set(STAGES))
        if unknown:
            raise ValueError(f"stages must be among {STAGES}, got unknown {unknown}")
        self.stages = tuple(stages)

    def _apply(self, stage: str, pl_module: pl.LightningModule, batch: Any) -> None:
        if stage not in self.stages or self.sharpen.strength == 0:
            return
        inputs = protocol_method(pl_module, "attack_inputs")(batch)
        with torch.no_grad():
            sharpened = self.sharpen(inputs)
        replace_batch_contents(batch, protocol_method(pl_module, "with_adversarial_inputs")(batch, sharpened))

    @override
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: D102
        self._apply("train", pl_module, batch)

    @override
    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:  # noqa: D102
        self._apply("validate", pl_module, batch)

    @override
    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:  # noqa: D102
        self._apply("test", pl_module, batch)

    @override
    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:  # noqa: D102
        self._apply("predict", pl_module, batch)
