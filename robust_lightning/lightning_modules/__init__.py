"""LightningModules: the method base, the robust classifier, one folder per method, and the registry."""

from robust_lightning.lightning_modules.base import RobustMethod
from robust_lightning.lightning_modules.classifier import RECIPES, RobustClassifier
from robust_lightning.lightning_modules.registry import METHODS, MethodSpec

__all__ = ["METHODS", "RECIPES", "MethodSpec", "RobustClassifier", "RobustMethod"]
