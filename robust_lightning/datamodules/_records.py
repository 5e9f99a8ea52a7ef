"""Checks of data records read from files: labels, fields, image values, audio sample rates.

Each check raises :class:`~robust_lightning.errors.DataFileError` naming the file, the record
(line number for text files, index for arrays) and the field, and saying what was expected.
Datamodules call them at ``setup`` so a bad file fails before training, not as a silent
wrong result or a bare ``KeyError`` deep in a collate function.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from robust_lightning._validation import is_int
from robust_lightning.errors import DataFileError

__all__ = [
    "check_image_values",
    "check_labels",
    "check_sample_rate",
    "parse_int_field",
    "require_columns",
    "require_fields",
]

Where = str | os.PathLike[str]


def _record(record: int | str | None) -> str:
    if record is None:
        return ""
    return f", {record}" if isinstance(record, str) else f", record {record}"


def parse_int_field(value: Any, *, source: Where, record: int | str | None, field: str) -> int:
    """``int(value)`` for a field read from a file; a missing or non-integer value names where.

    Args:
        value: the raw field (``None`` when the row had no such column).
        source: the file.
        record: the record's index, or a string such as ``"line 3"``.
        field: the field (column) name.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DataFileError(f"{source}{_record(record)}: field {field!r} is missing (expected an integer)")
    if isinstance(value, (bool, np.bool_)):
        raise DataFileError(f"{source}{_record(record)}: field {field!r} must be an integer, got {value!r}")
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    try:
        return int(str(value).strip())
    except ValueError:
        raise DataFileError(f"{source}{_record(record)}: field {field!r} must be an integer, got {value!r}") from None


def require_fields(row: Mapping[str, Any], fields: Sequence[str], *, source: Where,
                   record: int | str | None) -> None:
    """Every name in ``fields`` is a key of ``row`` with a value (``csv.DictReader`` gives
    ``None`` for columns a short row lacks).
    """
    missing = [name for name in fields if row.get(name) is None]
    if missing:
        raise DataFileError(f"{source}{_record(record)}: missing field(s) {missing} (the record has "
                            f"{sorted(k for k, v in row.items() if k is not None and v is not None)})")


def require_columns(row: Sequence[str], names: Sequence[str], *, source: Where, record: int | str | None) -> None:
    """A header-less CSV row has exactly the columns ``names``."""
    if len(row) != len(names):
        raise DataFileError(f"{source}{_record(record)}: expected {len(names)} columns ({', '.join(names)}), "
                            f"got {len(row)}")


def check_labels(labels: Sequence[int] | np.ndarray | Tensor, num_classes: int, *, source: Where,
                 field: str = "label", records: Sequence[int | str] | None = None) -> None:
    """Every label is an integer in ``[0, num_classes)``; the first one that is not is named.

    Args:
        labels: the labels in file order.
        num_classes: the number of classes the datamodule declares.
        source: the file (or a description of where the labels came from).
        field: the label's field name in the file.
        records: how to name each label's record (e.g. ``"line 7"``); default: its index.
    """
    values = labels.detach().cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    if values.size == 0:
        return
    if values.dtype.kind not in "iu":
        bad = next(i for i, v in enumerate(values.ravel().tolist())
                   if not is_int(v))
        where = records[bad] if records is not None else bad
        raise DataFileError(f"{source}{_record(where)}: {field!r} must be an integer class index, "
                            f"got {values.ravel()[bad]!r}")
    outside = np.flatnonzero((values.ravel() < 0) | (values.ravel() >= num_classes))
    if outside.size:
        bad = int(outside[0])
        where = records[bad] if records is not None else bad
        raise DataFileError(
            f"{source}{_record(where)}: {field} must be in 0..{num_classes - 1} (num_classes={num_classes}), "
            f"got {int(values.ravel()[bad])}; {outside.size} record(s) out of range"
        )


def check_image_values(images: Tensor | np.ndarray, *, source: Where, value_range: tuple[float, float] = (0.0, 1.0),
                       channels: int | None = None, size: tuple[int, int] | None = None) -> None:
    """Images are finite, within ``value_range``, and (when given) ``(N, channels, H, W)`` of ``size``.

    Args:
        images: ``(N, C, H, W)`` images (or ``(C, H, W)`` for one).
        source: where they came from.
        value_range: inclusive bounds of valid values (``(0, 1)`` floats, ``(0, 255)`` bytes).
        channels: expected channel count.
        size: expected ``(H, W)``.
    """
    array = images if isinstance(images, Tensor) else torch.as_tensor(np.asarray(images))
    if array.ndim not in (3, 4):
        raise DataFileError(f"{source}: images must have shape (N, C, H, W) or (C, H, W), got {tuple(array.shape)}")
    batch = array if array.ndim == 4 else array.unsqueeze(0)
    if channels is not None and batch.shape[1] != channels:
        raise DataFileError(f"{source}: images must have {channels} channel(s), got shape {tuple(array.shape)}")
    if size is not None and tuple(batch.shape[-2:]) != tuple(size):
        raise DataFileError(f"{source}: images must be {size[0]}x{size[1]}, got shape {tuple(array.shape)}")
    if batch.numel() == 0:
        return
    flat = batch.reshape(batch.shape[0], -1)
    if flat.is_floating_point():
        finite = torch.isfinite(flat).all(dim=1)
        if not bool(finite.all()):
            bad = int((~finite).nonzero()[0])
            raise DataFileError(f"{source}{_record(bad)}: image holds NaN or Inf values")
    low, high = value_range
    outside = ((flat < low) | (flat > high)).any(dim=1)
    if bool(outside.any()):
        bad = int(outside.nonzero()[0])
        raise DataFileError(
            f"{source}{_record(bad)}: image values must lie in [{low:g}, {high:g}], got "
            f"[{float(flat[bad].min()):g}, {float(flat[bad].max()):g}]"
        )


def check_sample_rate(rate: Any, expected: int | None, *, source: Where) -> int:
    """A clip's sample rate is a positive integer and, when ``expected`` is given, equals it."""
    whole = is_int(rate) or (isinstance(rate, float) and math.isfinite(rate) and rate.is_integer())
    if not whole or rate <= 0:
        raise DataFileError(f"{source}: sample rate must be a positive integer (Hz), got {rate!r}")
    if expected is not None and int(rate) != expected:
        raise DataFileError(f"{source}: sample rate is {int(rate)} Hz, expected {expected} Hz "
                            "(resample the file or set the datamodule's sample_rate)")
    return int(rate)


def check_image_dataset(images: Tensor, labels: Tensor, *, num_classes: int, image_shape: tuple[int, int, int],
                        source: Where) -> None:
    """An in-memory image split: one label per image, labels in ``[0, num_classes)``, images
    of ``image_shape`` with values in ``[0, 1]`` (floats) or ``[0, 255]`` (bytes).
    """
    if images.shape[0] != labels.shape[0]:
        raise DataFileError(f"{source}: {images.shape[0]} images but {labels.shape[0]} labels")
    if images.shape[0] == 0:
        raise DataFileError(f"{source}: no images")
    check_labels(labels, num_classes, source=source)
    value_range = (0.0, 1.0) if images.is_floating_point() else (0.0, 255.0)
    check_image_values(images, source=source, value_range=value_range, channels=image_shape[0],
                       size=(image_shape[1], image_shape[2]))
