"""Laplacian image sharpening (Liang & Pun, "Efficient Preemptive Robustification with Image
Sharpening"): ``clip(x - strength * Laplacian(x), 0, 1)``, training-free and surrogate-free.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from robust_lightning import ops

__all__ = ["LaplacianSharpen", "laplacian_sharpen"]


class _Sharpen(torch.autograd.Function):
    """Forward through the fused op; backward through the reference's autograd graph.

    White-box attacks must be able to differentiate through the defence (an adaptive attacker
    does), and the native kernel has no backward of its own.
    """

    @staticmethod
    def forward(ctx, x: Tensor, strength: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.strength = strength
        return ops.laplacian_sharpen(x, strength)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            x_ = x.detach().requires_grad_(True)
            out = ops._reference_laplacian_sharpen(x_, ctx.strength)
            (grad_x,) = torch.autograd.grad(out, x_, grad)
        return grad_x, None


def laplacian_sharpen(x: Tensor, strength: float) -> Tensor:
    """Differentiable ``clip(x - strength * lap(x), 0, 1)`` on ``(B, C, H, W)`` images in [0, 1]."""
    if not isinstance(x, Tensor) or x.dim() != 4 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"laplacian_sharpen expects float images (B, C, H, W), got {shape}")
    strength = float(strength)
    if not math.isfinite(strength) or strength < 0:
        raise ValueError(f"strength must be a finite number >= 0, got {strength!r}")
    if strength == 0:
        return x
    return _Sharpen.apply(x, strength)


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

    def forward(self, x: Tensor) -> Tensor:
        return laplacian_sharpen(x, self.strength)

    def extra_repr(self) -> str:
        return f"strength={self.strength}"
