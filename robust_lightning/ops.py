"""Python face of the fused attack ops.

The attack core never touches tensors' step/projection arithmetic directly: it calls
:func:`linf_step_`, :func:`l2_step_` and :func:`laplacian_sharpen` here. Each has a pure
PyTorch reference implementation below; the C++/CUDA extension in ``csrc/`` registers the
same ops under ``torch.ops.robust_lightning`` and, once built, is dispatched to instead.

Numerics contract shared by reference and native kernels: arithmetic runs in the "opmath"
type (fp32 for fp16/bf16/fp32, fp64 for fp64) and the result is rounded once into the
output dtype, so fp32/fp64 L-inf results are bitwise identical between implementations.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["linf_step_", "l2_step_", "laplacian_sharpen", "backend"]

# Added to the L2 norms so an all-zero gradient (or perturbation) does not divide by zero.
L2_NORM_FLOOR = 1e-12


def _opmath_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _per_sample(eps: Tensor, like: Tensor) -> Tensor:
    """Broadcast a scalar or ``(B,)`` eps against ``like`` of shape ``(B, ...)``."""
    if eps.dim() == 0:
        return eps
    return eps.reshape(eps.shape[0], *([1] * (like.dim() - 1)))


def _reference_linf_step_(
    x_adv: Tensor, grad: Tensor, x_clean: Tensor, eps: Tensor, alpha: float, lo: float, hi: float
) -> Tensor:
    opmath = _opmath_dtype(x_adv.dtype)
    eps_b = _per_sample(eps.to(opmath), x_adv)
    clean = x_clean.to(opmath)
    stepped = x_adv.to(opmath) + alpha * torch.sign(grad.to(opmath))
    projected = torch.minimum(torch.maximum(stepped, clean - eps_b), clean + eps_b)
    x_adv.copy_(projected.clamp_(lo, hi))
    return x_adv


def _reference_l2_step_(
    x_adv: Tensor, grad: Tensor, x_clean: Tensor, eps: Tensor, alpha: float, lo: float, hi: float
) -> Tensor:
    opmath = _opmath_dtype(x_adv.dtype)
    batch = x_adv.shape[0]
    eps_b = _per_sample(eps.to(opmath), x_adv)
    g = grad.to(opmath)
    g_norm = g.reshape(batch, -1).norm(p=2, dim=1).reshape(batch, *([1] * (g.dim() - 1)))
    clean = x_clean.to(opmath)
    delta = x_adv.to(opmath) + alpha * g / (g_norm + L2_NORM_FLOOR) - clean
    d_norm = delta.reshape(batch, -1).norm(p=2, dim=1).reshape(g_norm.shape)
    scale = torch.clamp(eps_b / (d_norm + L2_NORM_FLOOR), max=1.0)
    x_adv.copy_((clean + delta * scale).clamp_(lo, hi))
    return x_adv


def _reference_laplacian_sharpen(x: Tensor, strength: float) -> Tensor:
    """``clip(x - strength * lap(x), 0, 1)`` with a depthwise 3x3 Laplacian.

    The 4-neighbour kernel [[0,1,0],[1,-4,1],[0,1,0]] with replicate padding: a constant
    image stays constant, so borders do not get a spurious halo.
    """
    opmath = _opmath_dtype(x.dtype)
    xf = x.to(opmath)
    padded = torch.nn.functional.pad(xf, (1, 1, 1, 1), mode="replicate")
    lap = (
        padded[..., :-2, 1:-1]
        + padded[..., 2:, 1:-1]
        + padded[..., 1:-1, :-2]
        + padded[..., 1:-1, 2:]
        - 4.0 * xf
    )
    return (xf - strength * lap).clamp_(0.0, 1.0).to(x.dtype)


def backend() -> str:
    """Name of the implementation the ops dispatch to: ``"native"`` or ``"reference"``."""
    return "reference"


def linf_step_(
    x_adv: Tensor, grad: Tensor, x_clean: Tensor, eps: Tensor, alpha: float, lo: float, hi: float
) -> Tensor:
    """In place: ``x_adv = clamp(clamp(x_adv + alpha*sign(grad), x-eps, x+eps), lo, hi)``.

    Args:
        x_adv: current adversarial batch ``(B, ...)``, updated in place and returned.
        grad: gradient of the loss w.r.t. ``x_adv`` (same shape).
        x_clean: the clean batch the perturbation is measured from.
        eps: scalar tensor or per-sample ``(B,)`` L-inf radius.
        alpha: step size.
        lo, hi: valid input range.
    """
    return _reference_linf_step_(x_adv, grad, x_clean, eps, alpha, lo, hi)


def l2_step_(
    x_adv: Tensor, grad: Tensor, x_clean: Tensor, eps: Tensor, alpha: float, lo: float, hi: float
) -> Tensor:
    """In place: normalised-gradient step, projection onto the L2 ball, clamp to bounds."""
    return _reference_l2_step_(x_adv, grad, x_clean, eps, alpha, lo, hi)


def laplacian_sharpen(x: Tensor, strength: float) -> Tensor:
    """Sharpen ``(B, C, H, W)`` images in [0, 1]: ``clip(x - strength * lap(x), 0, 1)``."""
    return _reference_laplacian_sharpen(x, strength)
