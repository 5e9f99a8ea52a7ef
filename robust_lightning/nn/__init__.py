"""Shared layers and backbones (pure torch, usable without Lightning)."""

from robust_lightning.nn.backbones import PreActResNet18, SmallCNN
from robust_lightning.nn.layers import GradientReversal, Normalize

__all__ = ["GradientReversal", "Normalize", "PreActResNet18", "SmallCNN"]
