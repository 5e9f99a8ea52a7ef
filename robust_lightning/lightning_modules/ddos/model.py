"""Pure-torch pieces of the DDoS flow detector: the input normaliser and two tabular networks.

Flow features arrive in raw units (packets, bytes, µs, per second), spanning ten orders of
magnitude and heavy-tailed, so the first layer is :class:`SignedLogStandardize`:
``z = (sign(x) log1p(|x|) - mean) / std`` with statistics of the training flows. It lives inside
the model (like ``nn.Normalize`` for images) so attacks and their constraints work on raw flows.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from typing_extensions import override

from robust_lightning._validation import check_fraction, check_positive_int, check_positive_ints

__all__ = ["SignedLogStandardize", "TabularCNN", "TabularMLP"]


class SignedLogStandardize(nn.Module):
    """``(sign(x) * log1p(|x|) - mean) / std`` per feature; statistics set by :meth:`fit`.

    ``sign * log1p(|x|)`` keeps CICFlowMeter's ``-1`` sentinels (initial window of a non-TCP
    flow) apart from 0 and compresses byte rates of 1e9 to ~21. Until :meth:`fit` runs the
    layer is the bare signed log (mean 0, std 1) and :attr:`fitted` is ``False``.

    Args:
        num_features: number of input features.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = check_positive_int("num_features", num_features)
        self.register_buffer("mean", torch.zeros(num_features))
        self.register_buffer("std", torch.ones(num_features))
        # A buffer, so a checkpoint records whether the statistics were fitted.
        self.register_buffer("fitted_flag", torch.zeros((), dtype=torch.bool))

    @property
    def fitted(self) -> bool:
        return bool(self.fitted_flag)

    @staticmethod
    def signed_log(x: Tensor) -> Tensor:
        return torch.sign(x) * torch.log1p(x.abs())

    @torch.no_grad()
    def fit(self, x: Tensor) -> SignedLogStandardize:
        """Sets mean and std from raw features ``(N, F)``; constant features get std 1."""
        if x.dim() != 2 or x.shape[1] != self.num_features or x.shape[0] < 2:
            raise ValueError(f"fit expects at least 2 flows of shape (N, {self.num_features}), got {tuple(x.shape)}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError("fit got non-finite features; clean the flows first (FlowDataModule does)")
        z = self.signed_log(x.double())
        std = z.std(dim=0)
        self.mean.copy_(z.mean(dim=0).to(self.mean.dtype))
        self.std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)).to(self.std.dtype))
        self.fitted_flag.fill_(True)
        return self

    @override
    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 2 or x.shape[1] != self.num_features:
            raise ValueError(f"expected flows of shape (B, {self.num_features}), got {tuple(x.shape)}")
        return (self.signed_log(x) - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    @override
    def extra_repr(self) -> str:
        return f"num_features={self.num_features}, fitted={self.fitted}"


class TabularMLP(nn.Module):
    """Fully connected detector: ``Linear -> ReLU -> Dropout`` blocks, then a linear head.

    Args:
        num_features: input features (normalised).
        hidden: widths of the hidden layers.
        num_classes: outputs (2: benign, attack).
        dropout: dropout after each hidden layer.
    """

    def __init__(self, num_features: int, hidden: Sequence[int] = (128, 64), num_classes: int = 2,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.num_features = check_positive_int("num_features", num_features)
        self.num_classes = check_positive_int("num_classes", num_classes)
        widths = check_positive_ints("hidden", hidden, non_empty=True)
        dropout = check_fraction("dropout", dropout)
        layers: list[nn.Module] = []
        previous = num_features
        for width in widths:
            layers += [nn.Linear(previous, width), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            previous = width
        layers.append(nn.Linear(previous, num_classes))
        self.net = nn.Sequential(*layers)

    @override
    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 2 or x.shape[1] != self.num_features:
            raise ValueError(f"TabularMLP expects (B, {self.num_features}), got {tuple(x.shape)}")
        return self.net(x)


class TabularCNN(nn.Module):
    """1-D CNN detector: the feature vector is a length-``F`` signal with one channel.

    ``Conv1d -> BatchNorm -> ReLU`` blocks (``same`` padding) slide over the features in schema
    order, where neighbours are related statistics (min/mean/max/std of one quantity), then the
    flattened maps go through a hidden linear layer to the logits.

    Args:
        num_features: input features (normalised).
        channels: output channels of the convolution blocks.
        kernel_size: odd convolution width.
        hidden: width of the hidden linear layer.
        num_classes: outputs.
        dropout: dropout before the head.
    """

    def __init__(self, num_features: int, channels: Sequence[int] = (16, 32), kernel_size: int = 3,
                 hidden: int = 64, num_classes: int = 2, dropout: float = 0.1) -> None:
        super().__init__()
        self.num_features = check_positive_int("num_features", num_features)
        self.num_classes = check_positive_int("num_classes", num_classes)
        widths = check_positive_ints("channels", channels, non_empty=True)
        kernel_size = check_positive_int("kernel_size", kernel_size)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (same padding), got {kernel_size}")
        hidden = check_positive_int("hidden", hidden)
        dropout = check_fraction("dropout", dropout)
        blocks: list[nn.Module] = []
        previous = 1
        for width in widths:
            blocks += [nn.Conv1d(previous, width, kernel_size, padding=kernel_size // 2), nn.BatchNorm1d(width),
                       nn.ReLU(inplace=True)]
            previous = width
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(previous * num_features, hidden), nn.ReLU(inplace=True),
                                  nn.Dropout(dropout), nn.Linear(hidden, num_classes))

    @override
    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 2 or x.shape[1] != self.num_features:
            raise ValueError(f"TabularCNN expects (B, {self.num_features}), got {tuple(x.shape)}")
        return self.head(self.features(x[:, None, :]))
