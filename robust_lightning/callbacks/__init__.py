"""Callbacks that attack during training, evaluate robustness and apply input defences."""

from robust_lightning.callbacks.adversarial_training import AdversarialTraining
from robust_lightning.callbacks.checkpointing import LastCheckpoint
from robust_lightning.callbacks.conjugate_probe import ConjugateProbe
from robust_lightning.callbacks.robustness_evaluation import (
    SANITY_CHECKS,
    RobustnessEvaluation,
)
from robust_lightning.callbacks.sharpening import LaplacianSharpening

__all__ = ["SANITY_CHECKS", "AdversarialTraining", "ConjugateProbe", "LaplacianSharpening", "LastCheckpoint", "RobustnessEvaluation"]
