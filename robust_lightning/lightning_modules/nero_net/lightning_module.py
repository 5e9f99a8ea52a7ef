"""Training one NERO-Net genotype further: :class:`RobustClassifier` with a genotype backbone.

After the search, NERO-Net trains the fittest individual longer with standard training (87% ->
93% clean, 33% -> 47% FGSM on CIFAR-10) and then adversarially (40% AutoAttack). Both are
:class:`~robust_lightning.lightning_modules.classifier.RobustClassifier` recipes
(``standard``, ``pgd_at``, ...); this subclass only builds the backbone from a genotype and, when
no optimizer is configured, the optimizer from the genotype's learning block.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.cli import OptimizerCallable
from typing_extensions import override

from robust_lightning.lightning_modules.classifier import RobustClassifier
from robust_lightning.lightning_modules.nero_net.genotype import Genotype, default_genotype, load_genotype
from robust_lightning.lightning_modules.nero_net.model import NeroNet
from robust_lightning.lightning_modules.nero_net.search import _make_optimizer

__all__ = ["NeroNetClassifier"]


class NeroNetClassifier(RobustClassifier):
    """A :class:`RobustClassifier` whose backbone is the network of a NERO-Net genotype.

    Args:
        genotype: path to a genotype YAML (``best_genotype.yaml`` written by
            ``robust-lightning evolve``), a mapping, or ``None`` for the small built-in
            :func:`~robust_lightning.lightning_modules.nero_net.genotype.default_genotype`.
        input_shape: ``(C, H, W)`` of the inputs (the network's shapes are inferred from it).
        num_classes: number of classes.
        optimizer: optimizer factory; ``None`` uses the genotype's learning block (optimizer,
            learning rate and its hyper-parameters; the batch size is the DataModule's).
        **kwargs: every other :class:`RobustClassifier` argument (``recipe``, ``eps``, ``steps``,
            ``mean``, ``std``, ``lr_scheduler``, ...).
    """

    def __init__(
        self,
        genotype: str | dict[str, Any] | None = None,
        input_shape: Sequence[int] = (1, 16, 16),
        num_classes: int = 10,
        optimizer: OptimizerCallable | None = None,
        **kwargs: Any,
    ) -> None:
        if genotype is not None and not isinstance(genotype, (str, Path, dict)):
            raise TypeError("genotype must be a path to a genotype YAML, a mapping or None, "
                            f"got {type(genotype).__name__}")
        resolved: Genotype = default_genotype() if genotype is None else load_genotype(genotype)
        backbone = NeroNet(resolved, input_shape, num_classes)
        super().__init__(backbone=backbone, num_classes=num_classes, optimizer=optimizer, **kwargs)
        # The resolved genotype (not the path) goes into the checkpoint: plain data, so the
        # checkpoint stays self-contained and loadable with torch.load(weights_only=True).
        self.hparams["genotype"] = backbone.genotype.to_dict()
        self.hparams["input_shape"] = list(backbone.input_shape)
        self.genotype = backbone.genotype

    @override
    def default_optimizer(self, params: Any) -> torch.optim.Optimizer:
        """The optimizer of the genotype's learning block (used when no ``optimizer`` is configured)."""
        return _make_optimizer(self.genotype.learning, params)
