"""Genotype -> ``nn.Module`` compiler for NERO-Net (pure torch, no Lightning).

Shape inference walks the layers with the input's ``(C, H, W)``: Keras-style ``same``
padding (Fast-DENSER's networks are Keras models) keeps ``ceil(H / stride)`` and ``valid``
gives ``floor((H - k) / stride) + 1``. A ``valid`` layer whose kernel is larger than its input
cannot run; :func:`repair_genotype` switches it to ``same`` padding (the smallest change that
makes the network valid -- our reading, Fast-DENSER's Keras build would fail and the
individual get the worst fitness). Networks whose parameter count exceeds a budget are
rejected with a reason (:class:`InvalidGenotypeError`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robust_lightning._validation import check_int_at_least, check_optional_positive_int, is_int
from robust_lightning.errors import InvalidArgumentError
from robust_lightning.lightning_modules.nero_net.genotype import Genotype, load_genotype

__all__ = ["InvalidGenotypeError", "NeroNet", "build_network", "infer_shapes", "repair_genotype"]


class InvalidGenotypeError(ValueError):
    """The genotype cannot become a network for this input; the message says why."""


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """TensorFlow's ``same``: output ``ceil(size / stride)``, extra padding on the far side."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2, total - total // 2


def _layer_output(layer: dict[str, Any], size: int) -> int:
    if layer["padding"] == "same":
        return _same_padding(size, layer["kernel"], layer["stride"])[0]
    return (size - layer["kernel"]) // layer["stride"] + 1


def infer_shapes(genotype: Genotype, input_shape: Sequence[int]) -> list[tuple[int, ...]]:
    """Output shape of every features layer, then the flattened size and every fc layer.

    Raises:
        InvalidGenotypeError: when a layer's spatial output would be empty.
    """
    c, h, w = _check_input_shape(input_shape)
    shapes: list[tuple[int, ...]] = []
    for i, layer in enumerate(genotype.features):
        if layer["type"] in ("conv", "pool"):
            oh, ow = _layer_output(layer, h), _layer_output(layer, w)
            if oh < 1 or ow < 1:
                raise InvalidGenotypeError(
                    f"features[{i}] ({layer['type']} kernel {layer['kernel']}, padding valid) gets a "
                    f"{h}x{w} input and would output {oh}x{ow}"
                )
            h, w = oh, ow
            if layer["type"] == "conv":
                c = layer["filters"]
        shapes.append((c, h, w))
    size = c * h * w
    shapes.append((size,))
    for layer in genotype.classification:
        if layer["type"] == "fc":
            size = layer["units"]
        shapes.append((size,))
    return shapes


def repair_genotype(genotype: Genotype, input_shape: Sequence[int]) -> tuple[Genotype, list[str]]:
    """Make every conv/pool layer fit its input by switching too-large ``valid`` layers to ``same``.

    Returns:
        The repaired copy and one note per change (empty when nothing changed).
    """
    _, h, w = _check_input_shape(input_shape)
    repaired = Genotype.from_dict(genotype.to_dict())
    notes: list[str] = []
    for i, layer in enumerate(repaired.features):
        if layer["type"] not in ("conv", "pool"):
            continue
        if layer["padding"] == "valid" and (_layer_output(layer, h) < 1 or _layer_output(layer, w) < 1):
            layer["padding"] = "same"
            notes.append(f"features[{i}] {layer['type']}: kernel {layer['kernel']} > input {h}x{w}, "
                         "padding valid->same")
        h, w = _layer_output(layer, h), _layer_output(layer, w)
    return repaired, notes


def _check_input_shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(input_shape)
    if len(shape) != 3 or any(not is_int(v) or v < 1 for v in shape):
        raise InvalidArgumentError(f"input_shape must be (channels, height, width) of positive ints, got {input_shape!r}")
    return shape  # type: ignore[return-value]


def _activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "sigmoid":
        return nn.Sigmoid()
    return nn.Identity()


class _SamePad(nn.Module):
    """Asymmetric ``same`` padding for any stride (``nn.Conv2d(padding='same')`` needs stride 1)."""

    def __init__(self, kernel: int, stride: int, value: float = 0.0) -> None:
        super().__init__()
        self.kernel, self.stride, self.value = kernel, stride, value

    def forward(self, x: Tensor) -> Tensor:
        _, top, bottom = _same_padding(x.shape[-2], self.kernel, self.stride)
        _, left, right = _same_padding(x.shape[-1], self.kernel, self.stride)
        if top == bottom == left == right == 0:
            return x
        return F.pad(x, (left, right, top, bottom), value=self.value)


class _AvgPoolSame(nn.Module):
    """Average pooling with ``same`` padding that, like Keras, averages only real pixels."""

    def __init__(self, kernel: int, stride: int) -> None:
        super().__init__()
        self.pad = _SamePad(kernel, stride)
        self.kernel, self.stride = kernel, stride

    def forward(self, x: Tensor) -> Tensor:
        summed = F.avg_pool2d(self.pad(x), self.kernel, self.stride)
        ones = self.pad(torch.ones_like(x[:1, :1]))
        counts = F.avg_pool2d(ones, self.kernel, self.stride)
        return summed / counts


class NeroNet(nn.Module):
    """The network a genotype describes: features, flatten, classification, output layer.

    Args:
        genotype: a :class:`Genotype`, a mapping or a path to a genotype YAML.
        input_shape: ``(C, H, W)`` of the (normalised) inputs.
        num_classes: units of the fixed output layer (Fast-DENSER's ``softmax`` layer; the
            softmax itself is in the loss).
        max_params: reject networks with more trainable parameters (``None``: no limit).
        repair: switch too-large ``valid`` layers to ``same`` instead of rejecting them.

    Raises:
        InvalidGenotypeError: when the network cannot be built (and repair is off or does not
            help) or exceeds ``max_params``.
    """

    def __init__(
        self,
        genotype: Genotype | dict[str, Any] | str,
        input_shape: Sequence[int] = (1, 16, 16),
        num_classes: int = 10,
        max_params: int | None = None,
        repair: bool = True,
    ) -> None:
        super().__init__()
        check_int_at_least("num_classes", num_classes, 2)
        check_optional_positive_int("max_params", max_params)
        genotype = load_genotype(genotype)
        self.repairs: list[str] = []
        if repair:
            genotype, self.repairs = repair_genotype(genotype, input_shape)
        self.genotype = genotype
        self.input_shape = _check_input_shape(input_shape)
        self.num_classes = num_classes
        shapes = infer_shapes(genotype, input_shape)
        # Count before allocating: a 2048-unit fc on a large feature map can need gigabytes.
        n_params = _count_params(genotype, self.input_shape, num_classes, shapes)
        if max_params is not None and n_params > max_params:
            raise InvalidGenotypeError(f"network has {n_params} parameters, more than max_params={max_params}")
        channels = self.input_shape[0]
        features: list[nn.Module] = []
        for layer in genotype.features:
            t = layer["type"]
            if t == "conv":
                if layer["padding"] == "same":
                    features.append(_SamePad(layer["kernel"], layer["stride"]))
                features.append(nn.Conv2d(channels, layer["filters"], layer["kernel"], layer["stride"],
                                          bias=layer["bias"]))
                features.append(_activation(layer["activation"]))
                channels = layer["filters"]
            elif t == "pool":
                same = layer["padding"] == "same"
                if layer["pool"] == "max":
                    if same:
                        features.append(_SamePad(layer["kernel"], layer["stride"], value=float("-inf")))
                    features.append(nn.MaxPool2d(layer["kernel"], layer["stride"]))
                elif same:
                    features.append(_AvgPoolSame(layer["kernel"], layer["stride"]))
                else:
                    features.append(nn.AvgPool2d(layer["kernel"], layer["stride"]))
            elif t == "batch_norm":
                features.append(nn.BatchNorm2d(channels))
            else:
                features.append(nn.Dropout(layer["rate"]))
        self.features = nn.Sequential(*features)
        size = shapes[len(genotype.features)][0]
        head: list[nn.Module] = [nn.Flatten()]
        for layer in genotype.classification:
            if layer["type"] == "fc":
                head += [nn.Linear(size, layer["units"], bias=layer["bias"]), _activation(layer["activation"])]
                size = layer["units"]
            else:
                head.append(nn.Dropout(layer["rate"]))
        head.append(nn.Linear(size, num_classes))
        self.classifier = nn.Sequential(*head)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


def _count_params(genotype: Genotype, input_shape: tuple[int, int, int], num_classes: int,
                  shapes: list[tuple[int, ...]]) -> int:
    channels, total = input_shape[0], 0
    for layer, shape in zip(genotype.features, shapes, strict=False):
        if layer["type"] == "conv":
            total += channels * layer["filters"] * layer["kernel"] ** 2 + (layer["filters"] if layer["bias"] else 0)
        elif layer["type"] == "batch_norm":
            total += 2 * channels
        channels = shape[0]
    size = shapes[len(genotype.features)][0]
    for layer in genotype.classification:
        if layer["type"] == "fc":
            total += size * layer["units"] + (layer["units"] if layer["bias"] else 0)
            size = layer["units"]
    return total + size * num_classes + num_classes


def build_network(genotype: Genotype | dict[str, Any] | str, input_shape: Sequence[int], num_classes: int,
                  max_params: int | None = None, repair: bool = True) -> NeroNet:
    """Functional alias of :class:`NeroNet` (see there)."""
    return NeroNet(copy.deepcopy(genotype) if isinstance(genotype, dict) else genotype, input_shape,
                   num_classes, max_params=max_params, repair=repair)
