"""Gradient reversal (Ganin & Lempitsky 2015, "Unsupervised Domain Adaptation by Backpropagation").

Shared by the domain-adversarial methods (DRSF's soft-fusion discriminator, the audio quality
model's domain heads). The layer is the identity forward and multiplies the gradient by
``-lambda_`` backward (their Eq. 13 pseudo-function R_lambda), so a domain head trained to
classify the domain pushes the features it reads towards domain invariance.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from typing_extensions import override

from robust_lightning._validation import check_non_negative

__all__ = ["GradientReversal", "dann_lambda", "grad_reverse"]


class _ReverseGrad(torch.autograd.Function):
    @override
    @staticmethod
    def forward(ctx, x: Tensor, lambda_: float) -> Tensor:  # type: ignore[override]
        ctx.lambda_ = lambda_
        return x.view_as(x)

    @override
    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return -ctx.lambda_ * grad, None


def grad_reverse(x: Tensor, lambda_: float = 1.0) -> Tensor:
    """Identity in the forward pass, ``-lambda_ * grad`` in the backward pass."""
    return _ReverseGrad.apply(x, check_non_negative("lambda_", lambda_))


class GradientReversal(nn.Module):
    """Module form of :func:`grad_reverse`; ``lambda_`` may be changed between steps.

    Args:
        lambda_: scale of the reversed gradient (>= 0); schedule it with :func:`dann_lambda`.
    """

    def __init__(self, lambda_: float = 1.0) -> None:
        super().__init__()
        self.lambda_ = check_non_negative("lambda_", lambda_)

    @override
    def forward(self, x: Tensor) -> Tensor:
        return _ReverseGrad.apply(x, self.lambda_)

    @override
    def extra_repr(self) -> str:
        return f"lambda_={self.lambda_}"


def dann_lambda(progress: float, gamma: float = 10.0) -> float:
    """DANN's schedule ``2 / (1 + exp(-gamma * p)) - 1`` for training progress ``p`` in [0, 1].

    Ganin et al. 2016 (JMLR), Sec. 5.2.2: the domain loss is faded in from 0 to 1 so the noisy
    early domain classifier does not dominate the features.
    """
    if not 0.0 <= progress <= 1.0:
        raise ValueError(f"progress must be in [0, 1], got {progress!r}")
    return 2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0
