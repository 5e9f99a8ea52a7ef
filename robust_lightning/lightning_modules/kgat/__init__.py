"""KGAT: knowledge-guided adversarial training of mmdet infrared detectors (see README.md)."""

from robust_lightning.lightning_modules.kgat.knowledge import (
    background_gray_mean,
    class_gray_means,
    knowledge_gray_vectors,
    relation_stability_matrix,
    relation_weight,
    reliability_weight,
    spearman_rho,
)
from robust_lightning.lightning_modules.kgat.lightning_module import (
    RECIPES,
    KGATDetector,
)
from robust_lightning.lightning_modules.kgat.model import (
    MMDetDetector,
    build_detector_config,
    mmdet_available,
)

__all__ = [
    "RECIPES",
    "KGATDetector",
    "MMDetDetector",
    "background_gray_mean",
    "build_detector_config",
    "class_gray_means",
    "knowledge_gray_vectors",
    "mmdet_available",
    "relation_stability_matrix",
    "relation_weight",
    "reliability_weight",
    "spearman_rho",
]
