"""robust_lightning: adversarial-robustness training methods for PyTorch Lightning."""

from robust_lightning.attacks import FGSM, PGD, Attack, attack_mode, fgsm, pgd
from robust_lightning.callbacks import AdversarialTraining, RobustnessEvaluation
from robust_lightning.datamodules import CIFAR10DataModule, DigitsDataModule
from robust_lightning.lightning_modules import RobustClassifier
from robust_lightning.nn import GradientReversal, Normalize, PreActResNet18, SmallCNN
from robust_lightning.protocol import AdversarialMixin

__version__ = "0.1.0"

__all__ = [
    "FGSM",
    "PGD",
    "AdversarialMixin",
    "AdversarialTraining",
    "Attack",
    "CIFAR10DataModule",
    "DigitsDataModule",
    "GradientReversal",
    "Normalize",
    "PreActResNet18",
    "RobustClassifier",
    "RobustnessEvaluation",
    "SmallCNN",
    "attack_mode",
    "fgsm",
    "pgd",
]
