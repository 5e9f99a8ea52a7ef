"""LightningModules: the robust classifier and one folder per method."""

from robust_lightning.lightning_modules.classifier import RECIPES, RobustClassifier

__all__ = ["RECIPES", "RobustClassifier"]
