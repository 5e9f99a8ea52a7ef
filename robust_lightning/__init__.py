"""robust_lightning: adversarial-robustness training methods for PyTorch Lightning.

Every public name below is importable from here, but loaded on first use (PEP 562): the core
(attacks, callbacks, :class:`RobustClassifier`, image datamodules) needs only the core
dependencies, and a method whose extra is missing fails with one line naming the extra
(``pip install 'robust-lightning[rl]'``) only when it is used.
"""

# ruff: noqa: F401
from __future__ import annotations

from typing import TYPE_CHECKING

from robust_lightning._lazy import lazy_exports

__version__ = "0.1.0"

_ATTACKS = "robust_lightning.attacks"
_CALLBACKS = "robust_lightning.callbacks"
_DATAMODULES = "robust_lightning.datamodules"
_METHODS = "robust_lightning.lightning_modules"
_NN = "robust_lightning.nn"

# Public name -> the module that defines it (add yours in sorted order).
_EXPORTS: dict[str, str] = {
    "APGD": _ATTACKS,
    "FAB": _ATTACKS,
    "FGSM": _ATTACKS,
    "METHODS": _METHODS,
    "NFGSM": _ATTACKS,
    "PGD": _ATTACKS,
    "AdversarialMixin": "robust_lightning.protocol",
    "AdversarialTraining": _CALLBACKS,
    "Attack": _ATTACKS,
    "AutoAttack": _ATTACKS,
    "AttackEngine": _ATTACKS,
    "AudioQualityGRL": f"{_METHODS}.audio_grl",
    "BackdoorDefense": f"{_METHODS}.badllm_tg",
    "CIFAR10DataModule": _DATAMODULES,
    "ConjMask": f"{_METHODS}.nup",
    "ConjMaskClassifier": f"{_METHODS}.nup",
    "ConjugateProbe": _CALLBACKS,
    "ConstrainedPGD": _ATTACKS,
    "CurvatureTunableActivation": f"{_METHODS}.rct_af",
    "DDoSDetector": f"{_METHODS}.ddos",
    "DRSFClassifier": f"{_METHODS}.drsf",
    "DRSFDetector": f"{_METHODS}.drsf",
    "DiMODistillation": f"{_METHODS}.soft_dimo",
    "DetectionAttack": _ATTACKS,
    "DigitsDataModule": _DATAMODULES,
    "DomainGeneralizationDataModule": _DATAMODULES,
    "EarlyStoppedPGD": _ATTACKS,
    "ExternalAttack": _ATTACKS,
    "FlowDataModule": _DATAMODULES,
    "GradientReversal": _NN,
    "ImageFolderDataModule": _DATAMODULES,
    "InfraredDetectionDataModule": _DATAMODULES,
    "KGATDetector": f"{_METHODS}.kgat",
    "LaplacianSharpen": _NN,
    "LaplacianSharpening": _CALLBACKS,
    "LastCheckpoint": _CALLBACKS,
    "MaskedTokenTeacher": f"{_METHODS}.soft_dimo",
    "MethodSpec": _METHODS,
    "NeroNetClassifier": f"{_METHODS}.nero_net",
    "NeroNetSearch": f"{_METHODS}.nero_net",
    "Normalize": _NN,
    "PreActResNet18": _NN,
    "RCTAFClassifier": f"{_METHODS}.rct_af",
    "RankGenerator": _ATTACKS,
    "RobustClassifier": _METHODS,
    "RobustMethod": _METHODS,
    "RobustnessEvaluation": _CALLBACKS,
    "SIAAlign": f"{_METHODS}.sia",
    "SIADataModule": f"{_METHODS}.sia",
    "SIAInject": f"{_METHODS}.sia",
    "SmallCNN": _NN,
    "SoftDiMODistillation": f"{_METHODS}.soft_dimo",
    "Square": _ATTACKS,
    "SyntheticDigitsDataModule": _DATAMODULES,
    "SyntheticThermalDataModule": _DATAMODULES,
    "SyntheticThermalStylesDataModule": _DATAMODULES,
    "TextClassifier": f"{_METHODS}.badllm_tg",
    "TransferAttack": _ATTACKS,
    "TriggerGenerator": f"{_METHODS}.badllm_tg",
    "VoltVarDataModule": f"{_METHODS}.voltage_rl",
    "VoltVarTD3": f"{_METHODS}.voltage_rl",
    "apgd": _ATTACKS,
    "attack_mode": _ATTACKS,
    "depth_upscale": f"{_METHODS}.sia",
    "fgsm": _ATTACKS,
    "hessian_diag_norm": f"{_METHODS}.rct_af",
    "load_checkpoint": "robust_lightning._checkpoint",
    "pgd": _ATTACKS,
    "swap_activations": f"{_METHODS}.rct_af",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

# The imports below only tell type checkers and IDEs what the lazy names are (__all__ is
# built from _EXPORTS, so linters cannot see that they are re-exported).
if TYPE_CHECKING:
    from robust_lightning._checkpoint import load_checkpoint
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
        LastCheckpoint,
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
