"""LightningModules: the robust classifier and one folder per method.

Names load on first use (see ``robust_lightning/_lazy.py``), so listing or importing one method
never imports another method's extra (mmdet, transformers, pandapower...).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from robust_lightning._lazy import lazy_exports

# Public name -> defining module. The method registry (``METHODS``) belongs here too, as
# ``"METHODS": "robust_lightning.lightning_modules.registry"``.
_EXPORTS: dict[str, str] = {
    "RECIPES": "robust_lightning.lightning_modules.classifier",
    "RobustClassifier": "robust_lightning.lightning_modules.classifier",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

if TYPE_CHECKING:
    from robust_lightning.lightning_modules.classifier import RECIPES, RobustClassifier
