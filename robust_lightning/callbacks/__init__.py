"""Callbacks that attack during training, evaluate robustness and apply input defences.

Names load on first use (see ``robust_lightning/_lazy.py``).
"""

# ruff: noqa: F401
from __future__ import annotations

from typing import TYPE_CHECKING

from robust_lightning._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "SANITY_CHECKS": "robust_lightning.callbacks.robustness_evaluation",
    "AdversarialTraining": "robust_lightning.callbacks.adversarial_training",
    "ConjugateProbe": "robust_lightning.callbacks.conjugate_probe",
    "LastCheckpoint": "robust_lightning.callbacks.checkpointing",
    "LaplacianSharpening": "robust_lightning.callbacks.sharpening",
    "RobustnessEvaluation": "robust_lightning.callbacks.robustness_evaluation",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

# The imports below only tell type checkers and IDEs what the lazy names are (__all__ is
# built from _EXPORTS, so linters cannot see that they are re-exported).
if TYPE_CHECKING:
    from robust_lightning.callbacks.adversarial_training import AdversarialTraining
    from robust_lightning.callbacks.checkpointing import LastCheckpoint
    from robust_lightning.callbacks.conjugate_probe import ConjugateProbe
    from robust_lightning.callbacks.robustness_evaluation import (
        SANITY_CHECKS,
        RobustnessEvaluation,
    )
    from robust_lightning.callbacks.sharpening import LaplacianSharpening
