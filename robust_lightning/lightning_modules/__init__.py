"""LightningModules: the method base, the robust classifier, one folder per method, and the registry.

Names load on first use (see ``robust_lightning/_lazy.py``), so listing or importing one method
never imports another method's extra (mmdet, transformers, pandapower...).
"""

# ruff: noqa: F401
from __future__ import annotations

from typing import TYPE_CHECKING

from robust_lightning._lazy import lazy_exports

# Public name -> defining module (add yours in sorted order).
_EXPORTS: dict[str, str] = {
    "METHODS": "robust_lightning.lightning_modules.registry",
    "RECIPES": "robust_lightning.lightning_modules.classifier",
    "MethodSpec": "robust_lightning.lightning_modules.registry",
    "RobustClassifier": "robust_lightning.lightning_modules.classifier",
    "RobustMethod": "robust_lightning.lightning_modules.base",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

# The imports below only tell type checkers and IDEs what the lazy names are (__all__ is
# built from _EXPORTS, so linters cannot see that they are re-exported).
if TYPE_CHECKING:
    from robust_lightning.lightning_modules.base import RobustMethod
    from robust_lightning.lightning_modules.classifier import RECIPES, RobustClassifier
    from robust_lightning.lightning_modules.registry import METHODS, MethodSpec
