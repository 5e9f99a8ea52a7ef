"""Laplacian image sharpening (Liang & Pun, "Efficient Preemptive Robustification with Image
Sharpening"): ``clip(x - strength * Laplacian(x), 0, 1)``, training-free and surrogate-free.
"""

from __future__ import annotations

import math

from torch import Tensor, nn
from typing_extensions import override

from robust_lightning import ops

__all__ = ["LaplacianSharpen", "laplacian_sharpen"]


def laplacian_sharpen(x: Tensor, strength: float) -> Tensor:
    """Differentiable ``clip(x - strength * lap(x), 0, 1)`` on ``(B, C, H, W)`` images in [0, 1].

    ``lap`` is the depthwise 4-neighbour Laplacian ``[[0, 1, 0], [1, -4, 1], [0, 1, 0]]`` with
    replicate padding. Runs the fused ``robust_lightning.ops.laplacian_sharpen`` (native kernel
    when built, else the PyTorch reference); both are differentiable, so an adaptive attacker
    can take gradients through the defence.
    """
    if not isinstance(x, Tensor) or x.dim() != 4 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"laplacian_sharpen expects float images (B, C, H, W), got {shape}")
    strength = float(strength)
    if not math.isfinite(strength) or strength < 0:
        raise ValueError(f"strength must be a finite number >= 0, got {strength!r}")
    if strength == 0:
        return x
    return ops.laplacian_sharpen(x, strength)


class LaplacianSharpen(nn.Module):
    """Module form of :func:`laplacian_sharpen`, to put in front of any image model.

    Args:
        strength: the sharpening coefficient (0 = identity).
    """

    def __init__(self, strength: float = 1.0) -> None:
        super().__init__()
        strength = float(strength)
        if not math.isfinite(strength) or strength < 0:
            raise ValueError(f"strength must be a finite number >= 0, got {strength!r}")
        self.strength = strength

    @override
    def forward(self, x: Tensor) -> Tensor:
        return laplacian_sharpen(x, self.strength)

    @override
    def extra_repr(self) -> str:
        return f"strength={self.strength}"
