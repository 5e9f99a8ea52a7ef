"""robust_lightning: adversarial-robustness training methods for PyTorch Lightning."""

from robust_lightning.attacks import (
    APGD,
    FAB,
    FGSM,
    NFGSM,
    PGD,
    Attack,
    AttackEngine,
    AutoAttack,
    ConstrainedPGD,
    DetectionAttack,
    EarlyStoppedPGD,
    ExternalAttack,
    RankGenerator,
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
from robust_lightning.lightning_modules import (
    METHODS,
    MethodSpec,
    RobustClassifier,
    RobustMethod,
)
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
from robust_lightning.lightning_modules.soft_dimo import (
    DiMODistillation,
    MaskedTokenTeacher,
    SoftDiMODistillation,
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
    "FAB",
    "FGSM",
    "METHODS",
    "NFGSM",
    "PGD",
    "AdversarialMixin",
    "AdversarialTraining",
    "Attack",
    "AttackEngine",
    "AudioQualityGRL",
    "AutoAttack",
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
    "DiMODistillation",
    "DigitsDataModule",
    "EarlyStoppedPGD",
    "DomainGeneralizationDataModule",
    "ExternalAttack",
    "FlowDataModule",
    "GradientReversal",
    "ImageFolderDataModule",
    "InfraredDetectionDataModule",
    "KGATDetector",
    "LaplacianSharpen",
    "LaplacianSharpening",
    "MaskedTokenTeacher",
    "MethodSpec",
    "NeroNetClassifier",
    "NeroNetSearch",
    "Normalize",
    "PreActResNet18",
    "RCTAFClassifier",
    "RankGenerator",
    "RobustClassifier",
    "RobustMethod",
    "RobustnessEvaluation",
    "SIAAlign",
    "SIADataModule",
    "SIAInject",
    "SmallCNN",
    "SoftDiMODistillation",
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

# Reliability: last.ckpt every epoch; checkpoints read weights-only with errors that name the file.
from robust_lightning._checkpoint import load_checkpoint  # noqa: E402
from robust_lightning.callbacks.checkpointing import LastCheckpoint  # noqa: E402

__all__ += ["LastCheckpoint", "load_checkpoint"]
