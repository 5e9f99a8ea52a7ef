"""Audio quality assessment robust to spurious domain cues (domain-adversarial GRL heads)."""

from robust_lightning.lightning_modules.audio_grl.lightning_module import DOMAIN_STRATEGIES, AudioQualityGRL
from robust_lightning.lightning_modules.audio_grl.metrics import (
    SystemLevelCorrelation,
    domain_probe_accuracy,
    quality_metrics,
)
from robust_lightning.lightning_modules.audio_grl.model import (
    AudioQualityGRLNet,
    DomainClassifier,
    FeatureCache,
    Frontend,
    HFWav2Vec2Frontend,
    LogMelFrontend,
    ModuleFrontend,
    QualityEncoder,
    QualityHead,
    TorchaudioSSLFrontend,
    gaussian_nll,
)

__all__ = [
    "DOMAIN_STRATEGIES",
    "AudioQualityGRL",
    "AudioQualityGRLNet",
    "DomainClassifier",
    "FeatureCache",
    "Frontend",
    "HFWav2Vec2Frontend",
    "LogMelFrontend",
    "ModuleFrontend",
    "QualityEncoder",
    "QualityHead",
    "SystemLevelCorrelation",
    "TorchaudioSSLFrontend",
    "domain_probe_accuracy",
    "gaussian_nll",
    "quality_metrics",
]
