"""Callbacks that attack during training, evaluate robustness and apply input defences.

Names load on first use (see ``robust_lightning/_lazy.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from robust_lightning._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "SANITY_CHECKS": "robust_lightning.callbacks.robustness_evaluation",
    "AdversarialTraining": "robust_lightning.callbacks.adversarial_training",
    "ConjugateProbe": "robust_lightning.callbacks.conjugate_probe",
    "LaplacianSharpening": "robust_lightning.callbacks.sharpening",
    "RobustnessEvaluation": "robust_lightning.callbacks.robustness_evaluation",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

if TYPE_CHECKING:
    from robust_lightning.callbacks.adversarial_training import AdversarialTraining
    from robust_lightning.callbacks.conjugate_probe import ConjugateProbe
    from robust_lightning.callbacks.robustness_evaluation import (
        SANITY_CHECKS,
        RobustnessEvaluation,
    )
    from robust_lightning.callbacks.sharpening import LaplacianSharpening
