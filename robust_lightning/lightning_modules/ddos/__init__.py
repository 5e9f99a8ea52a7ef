"""DDoS flow detection robust to constrained feature-space attacks (tabular MLP / 1-D CNN)."""

from robust_lightning.lightning_modules.ddos.lightning_module import (
    RECIPES,
    DDoSDetector,
    detection_scores,
)
from robust_lightning.lightning_modules.ddos.model import (
    SignedLogStandardize,
    TabularCNN,
    TabularMLP,
)

__all__ = ["RECIPES", "DDoSDetector", "SignedLogStandardize", "TabularCNN", "TabularMLP", "detection_scores"]
