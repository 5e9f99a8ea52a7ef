"""Small layers shared by several methods."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from typing_extensions import override

from robust_lightning._validation import check_positive_ints


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` as the model's first layer.

    Keeping normalisation inside the model means every attack budget is expressed in the
    [0, 1] input space the DataModules emit (eps = 8/255 means the same thing everywhere).

    Args:
        mean: one value per channel.
        std: one positive value per channel.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std) or len(mean) == 0:
            raise ValueError(
                f"mean and std must have the same non-zero length (one per channel), got "
                f"{len(mean)} and {len(std)}"
            )
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {list(std)}")
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    @override
    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.mean.shape[1]:
            raise ValueError(
                f"Normalize expects images (B, {self.mean.shape[1]}, H, W), got shape {tuple(x.shape)}"
            )
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    @override
    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def mlp(in_features: int, hidden: Sequence[int], out_features: int) -> nn.Sequential:
    """``Linear -> ReLU`` for each hidden width, then a final ``Linear`` (no activation).

    Raises:
        ValueError: If ``hidden`` is not a list of positive ints.
    """
    layers: list[nn.Module] = []
    width = in_features
    for h in check_positive_ints("hidden", hidden):
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)
