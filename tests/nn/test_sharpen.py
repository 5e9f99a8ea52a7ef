"""LaplacianSharpen: the formula, its gradient and its argument checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from robust_lightning.nn import LaplacianSharpen
from robust_lightning.nn.sharpen import laplacian_sharpen

KERNEL = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def _by_convolution(x: torch.Tensor, strength: float) -> torch.Tensor:
    channels = x.shape[1]
    weight = KERNEL.to(x.dtype).expand(channels, 1, 3, 3)
    lap = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), weight, groups=channels)
    return (x - strength * lap).clamp(0, 1)


@pytest.mark.parametrize("strength", [0.0, 0.5, 2.0])
def test_matches_a_depthwise_convolution(strength):
    x = torch.rand(3, 2, 9, 7, dtype=torch.float64)
    torch.testing.assert_close(laplacian_sharpen(x, strength), _by_convolution(x, strength))


def test_constant_images_are_unchanged_and_edges_get_steeper():
    flat = torch.full((1, 1, 6, 6), 0.4)
    torch.testing.assert_close(laplacian_sharpen(flat, 1.0), flat)
    step = torch.zeros(1, 1, 6, 6)
    step[..., 3:] = 0.6
    sharp = laplacian_sharpen(step, 0.5)
    assert sharp[0, 0, 0, 2] == 0.0 and sharp[0, 0, 0, 3] > 0.6  # overshoot on the bright side


def test_gradient_matches_finite_differences():
    x = (0.2 + 0.6 * torch.rand(2, 1, 5, 5, dtype=torch.float64)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: laplacian_sharpen(z, 0.3), (x,))


def test_module_wraps_the_function():
    x = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(LaplacianSharpen(0.7)(x), laplacian_sharpen(x, 0.7))
    assert "strength=0.7" in repr(LaplacianSharpen(0.7))


@pytest.mark.parametrize("strength", [-1.0, float("nan"), float("inf")])
def test_bad_strength_is_named(strength):
    with pytest.raises(ValueError, match="strength"):
        LaplacianSharpen(strength)


def test_bad_input_shape_is_explained():
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        laplacian_sharpen(torch.rand(8, 8), 1.0)
