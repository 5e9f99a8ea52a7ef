"""Backbones used across methods: a small CNN for quick runs and PreActResNet-18.

PreActResNet-18 follows He et al. 2016 ("Identity Mappings in Deep Residual Networks") as
used by the standard robustness baselines (Rice et al. 2020; Wong et al. 2020): a 3x3 stem
without max-pooling, four stages of two pre-activation basic blocks (64-128-256-512), a final
BN-ReLU, global average pooling and a linear head.

Both backbones apply their non-linearity through ``nn.Module`` instances built by an
``activation`` factory (never ``F.relu`` inside ``forward``), so methods that change the
activation (RCT-AF's ``swap_activations``) can replace them in place. Activation modules hold
no parameters, so the ``state_dict`` keys are the same whatever the activation.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn
from typing_extensions import override

from robust_lightning._validation import check_positive_int

ActivationFactory = Callable[[], nn.Module]


def _activation_builder(activation: ActivationFactory) -> ActivationFactory:
    """Checks ``activation`` once, up front, so a wrong value fails in the constructor."""
    if not callable(activation):
        raise TypeError(
            f"activation must be a callable returning an nn.Module (a class such as nn.ReLU or a "
            f"functools.partial), got {activation!r}"
        )
    try:
        probe = activation()
    except TypeError as error:  # e.g. F.relu, which needs its input: a function, not a factory
        raise TypeError(
            f"activation must build an nn.Module when called with no arguments (nn.ReLU, not "
            f"F.relu), but {activation!r}() failed: {error}"
        ) from error
    if not isinstance(probe, nn.Module):
        raise TypeError(f"activation must return an nn.Module, got {type(probe).__name__} from {activation!r}")
    return activation


class SmallCNN(nn.Module):
    """Two conv blocks and an MLP head; trains on 16x16 digits in seconds on a CPU.

    Args:
        num_classes: number of output logits.
        in_channels: input image channels.
        width: channels of the first conv block (the second has twice as many).
        hidden: width of the hidden linear layer.
        activation: ``nn.Module`` factory for the non-linearity, called once per use (a class
            such as ``nn.ReLU``, or ``functools.partial(CurvatureTunableActivation, 8.0)``);
            methods such as RCT-AF also swap the modules of a built network.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        width: int = 32,
        hidden: int = 128,
        activation: ActivationFactory = nn.ReLU,
    ) -> None:
        super().__init__()
        for name, value in (("num_classes", num_classes), ("in_channels", in_channels),
                            ("width", width), ("hidden", hidden)):
            check_positive_int(name, value)
        activation = _activation_builder(activation)
        self.num_classes = num_classes
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.BatchNorm2d(width),
            activation(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.BatchNorm2d(2 * width),
            activation(),
            # Adaptive pooling makes the head independent of the input resolution.
            nn.AdaptiveAvgPool2d(4),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(2 * width * 16, hidden), activation(), nn.Linear(hidden, num_classes)
        )

    @override
    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


class PreActBlock(nn.Module):
    """Pre-activation basic block: BN-ReLU-conv-BN-ReLU-conv plus identity/1x1 shortcut.

    Args:
        in_planes: input channels.
        planes: output channels.
        stride: stride of the first conv (and of the projection shortcut).
        activation: ``nn.Module`` factory for the two non-linearities (``nn.ReLU`` by default).
    """

    expansion = 1

    def __init__(
        self, in_planes: int, planes: int, stride: int = 1, activation: ActivationFactory = nn.ReLU
    ) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.act1 = activation()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = activation()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)

    @override
    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(x))
        # The shortcut branches off after the first BN-ReLU, as in the pre-activation paper.
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(self.act2(self.bn2(out)))
        return out + shortcut


class PreActResNet18(nn.Module):
    """PreActResNet-18 for 32x32 inputs (works on any size >= 8 thanks to global pooling).

    Args:
        num_classes: number of output logits.
        in_channels: input image channels.
        width: channels of the first stage (64 in the paper); smaller values for quick tests.
        activation: ``nn.Module`` factory for every non-linearity (``nn.ReLU`` by default);
            one fresh module per use, so each can be swapped on its own.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        width: int = 64,
        activation: ActivationFactory = nn.ReLU,
    ) -> None:
        super().__init__()
        for name, value in (("num_classes", num_classes), ("in_channels", in_channels), ("width", width)):
            check_positive_int(name, value)
        activation = _activation_builder(activation)
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        stages = []
        in_planes = width
        for i, stride in enumerate((1, 2, 2, 2)):
            planes = width * 2**i
            stages.append(nn.Sequential(PreActBlock(in_planes, planes, stride, activation),
                                        PreActBlock(planes, planes, 1, activation)))
            in_planes = planes
        self.layers = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(in_planes)
        self.act = activation()
        self.linear = nn.Linear(in_planes, num_classes)

    @override
    def forward(self, x: Tensor) -> Tensor:
        out = self.layers(self.conv1(x))
        out = self.act(self.bn(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)
