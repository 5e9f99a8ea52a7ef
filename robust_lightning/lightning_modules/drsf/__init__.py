"""DRSF: single-domain generalisation from synthetic data (domain reassembly + soft fusion)."""

from robust_lightning.lightning_modules.drsf.lightning_module import (
    METHODS,
    DRSFClassifier,
)
from robust_lightning.lightning_modules.drsf.model import (
    EMBEDDING,
    DigitCNN,
    DRSFNet,
    EntropyGuidedChannelAttention,
    MixStyle,
    MultiLevelBackbone,
    PreActResNet18Levels,
    RandomConvolution,
    SoftDomainFusion,
    SoftFusionDiscriminator,
    js_divergence,
    soft_fuse,
    spatial_entropy,
)

__all__ = [
    "EMBEDDING",
    "METHODS",
    "DRSFClassifier",
    "DRSFNet",
    "DigitCNN",
    "EntropyGuidedChannelAttention",
    "MixStyle",
    "MultiLevelBackbone",
    "PreActResNet18Levels",
    "RandomConvolution",
    "SoftDomainFusion",
    "SoftFusionDiscriminator",
    "js_divergence",
    "soft_fuse",
    "spatial_entropy",
]
