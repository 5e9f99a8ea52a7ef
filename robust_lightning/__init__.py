"""robust_lightning: adversarial-robustness training methods for PyTorch Lightning."""

from robust_lightning.attacks import (
    APGD,
    FGSM,
    NFGSM,
    PGD,
    Attack,
    AttackEngine,
    ConstrainedPGD,
    DetectionAttack,
    Square,
    TransferAttack,
    apgd,
    attack_mode,
    fgsm,
    pgd,
)
from robust_lightning.callbacks import (
    AdversarialTraining,
    ConjugateProbe,
    LaplacianSharpening,
    RobustnessEvaluation,
)
from robust_lightning.datamodules import (
    CIFAR10DataModule,
    DigitsDataModule,
    DomainGeneralizationDataModule,
    FlowDataModule,
    ImageFolderDataModule,
    InfraredDetectionDataModule,
    SyntheticDigitsDataModule,
    SyntheticThermalDataModule,
    SyntheticThermalStylesDataModule,
)
from robust_lightning.lightning_modules import RobustClassifier
from robust_lightning.lightning_modules.audio_grl import AudioQualityGRL
from robust_lightning.lightning_modules.badllm_tg import (
    BackdoorDefense,
    TextClassifier,
    TriggerGenerator,
)
from robust_lightning.lightning_modules.ddos import DDoSDetector
from robust_lightning.lightning_modules.drsf import DRSFClassifier, DRSFDetector
from robust_lightning.lightning_modules.kgat import KGATDetector
from robust_lightning.lightning_modules.nero_net import NeroNetClassifier, NeroNetSearch
from robust_lightning.lightning_modules.nup import ConjMask, ConjMaskClassifier
from robust_lightning.lightning_modules.rct_af import (
    CurvatureTunableActivation,
    RCTAFClassifier,
    hessian_diag_norm,
    swap_activations,
)
from robust_lightning.lightning_modules.sia import (
    SIAAlign,
    SIADataModule,
    SIAInject,
    depth_upscale,
)
from robust_lightning.lightning_modules.voltage_rl import VoltVarDataModule, VoltVarTD3
from robust_lightning.nn import (
    GradientReversal,
    LaplacianSharpen,
    Normalize,
    PreActResNet18,
    SmallCNN,
)
from robust_lightning.protocol import AdversarialMixin

__version__ = "0.1.0"

__all__ = [
    "APGD",
    "FGSM",
    "NFGSM",
    "PGD",
    "AdversarialMixin",
    "AdversarialTraining",
    "Attack",
    "AttackEngine",
    "AudioQualityGRL",
    "BackdoorDefense",
    "CIFAR10DataModule",
    "ConjMask",
    "ConjMaskClassifier",
    "ConjugateProbe",
    "ConstrainedPGD",
    "CurvatureTunableActivation",
    "DDoSDetector",
    "DRSFClassifier",
    "DRSFDetector",
    "DetectionAttack",
    "DigitsDataModule",
    "DomainGeneralizationDataModule",
    "FlowDataModule",
    "GradientReversal",
    "ImageFolderDataModule",
    "InfraredDetectionDataModule",
    "KGATDetector",
    "LaplacianSharpen",
    "LaplacianSharpening",
    "NeroNetClassifier",
    "NeroNetSearch",
    "Normalize",
    "PreActResNet18",
    "RCTAFClassifier",
    "RobustClassifier",
    "RobustnessEvaluation",
    "SIAAlign",
    "SIADataModule",
    "SIAInject",
    "SmallCNN",
    "Square",
    "SyntheticDigitsDataModule",
    "SyntheticThermalDataModule",
    "SyntheticThermalStylesDataModule",
    "TextClassifier",
    "TransferAttack",
    "TriggerGenerator",
    "VoltVarDataModule",
    "VoltVarTD3",
    "apgd",
    "attack_mode",
    "depth_upscale",
    "fgsm",
    "hessian_diag_norm",
    "pgd",
    "swap_activations",
]
