"""Shared layers and backbones (pure torch, usable without Lightning)."""

from robust_lightning.nn.backbones import PreActResNet18, SmallCNN
from robust_lightning.nn.grl import GradientReversal, dann_lambda, grad_reverse
from robust_lightning.nn.layers import Normalize, mlp
from robust_lightning.nn.sharpen import LaplacianSharpen, laplacian_sharpen

__all__ = [
    "GradientReversal",
    "LaplacianSharpen",
    "Normalize",
    "PreActResNet18",
    "SmallCNN",
    "dann_lambda",
    "grad_reverse",
    "laplacian_sharpen",
    "mlp",
]
