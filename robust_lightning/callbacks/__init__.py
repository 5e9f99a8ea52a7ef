"""Callbacks that attack during training and evaluate robustness."""

from robust_lightning.callbacks.adversarial_training import AdversarialTraining
from robust_lightning.callbacks.robustness_evaluation import RobustnessEvaluation

__all__ = ["AdversarialTraining", "RobustnessEvaluation"]
