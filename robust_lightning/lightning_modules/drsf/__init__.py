"""DRSF: single-domain generalisation from synthetic data (domain reassembly + soft fusion);
``DRSFDetector`` is the detection recipe of the released code on mmdet (see README.md).
"""

from robust_lightning.lightning_modules.drsf.detection_lightning_module import (
    DETECTION_METHODS,
    DRSFDetector,
)
from robust_lightning.lightning_modules.drsf.detection_model import (
    EMATeacher,
    ImageDomainHead,
    InstanceDomainHead,
    block_mask,
    scale_gradient,
    select_pseudo_labels,
)
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
    "DETECTION_METHODS",
    "EMBEDDING",
    "METHODS",
    "DRSFClassifier",
    "DRSFDetector",
    "DRSFNet",
    "DigitCNN",
    "EMATeacher",
    "EntropyGuidedChannelAttention",
    "ImageDomainHead",
    "InstanceDomainHead",
    "MixStyle",
    "MultiLevelBackbone",
    "PreActResNet18Levels",
    "RandomConvolution",
    "SoftDomainFusion",
    "SoftFusionDiscriminator",
    "block_mask",
    "js_divergence",
    "scale_gradient",
    "select_pseudo_labels",
    "soft_fuse",
    "spatial_entropy",
]
