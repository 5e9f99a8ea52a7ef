"""RCT-AF: curvature-controlled activations and the max|σ''| robustness trade-off.

Yu, Su & Zhu, "Why the Maximum Second Derivative of Activations Matters for Adversarial
Robustness" (arXiv:2603.23860). See this folder's README.md.
"""

from robust_lightning.lightning_modules.rct_af.lightning_module import RCTAFClassifier
from robust_lightning.lightning_modules.rct_af.model import (
    ACTIVATION_BASES,
    CURVATURE_CONSTANTS,
    SWAPPABLE_ACTIVATIONS,
    CurvatureTunableActivation,
    hessian_diag_norm,
    hutchinson_hessian_diagonal,
    max_second_derivative,
    swap_activations,
)

__all__ = [
    "ACTIVATION_BASES",
    "CURVATURE_CONSTANTS",
    "SWAPPABLE_ACTIVATIONS",
    "CurvatureTunableActivation",
    "RCTAFClassifier",
    "hessian_diag_norm",
    "hutchinson_hessian_diagonal",
    "max_second_derivative",
    "swap_activations",
]
