"""classifier-FD, precision/recall and the sample grid."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from robust_lightning.errors import InvalidArgumentError
from robust_lightning.lightning_modules.soft_dimo import (
    DigitFeatureClassifier,
    classifier_frechet_distance,
    precision_recall,
    sample_quality,
    save_sample_grid,
)


def _classifier() -> DigitFeatureClassifier:
    torch.manual_seed(0)
    return DigitFeatureClassifier(width=4, feature_dim=8).eval()


def test_classifier_fd_is_zero_for_one_set_and_grows_with_a_shift() -> None:
    classifier = _classifier()
    images = torch.rand(200, 1, 8, 8)
    same = classifier_frechet_distance(classifier, images, images)
    near = classifier_frechet_distance(classifier, images, (images + 0.05).clamp(0, 1))
    far = classifier_frechet_distance(classifier, images, (images + 0.5).clamp(0, 1))
    assert abs(same) < 1e-3
    assert same < near < far


def test_precision_recall_extremes_and_a_mode_dropped() -> None:
    torch.manual_seed(0)
    real = torch.randn(100, 4)
    assert precision_recall(real, real) == (1.0, 1.0)
    far = real + 100.0
    assert precision_recall(real, far) == (0.0, 0.0)
    # Fakes covering only half of the real points: precise, but recall about half.
    half = real[real[:, 0] > 0]
    precision, recall = precision_recall(real, half + 0.01 * torch.randn_like(half))
    assert precision > 0.9 and 0.3 < recall < 0.8
    with pytest.raises(InvalidArgumentError, match="k=3"):
        precision_recall(real[:3], real[:3])


def test_sample_quality_reports_every_metric(tmp_path: Path) -> None:
    classifier = _classifier()
    real, fake = torch.rand(50, 1, 8, 8), torch.rand(40, 1, 8, 8)
    result = sample_quality(classifier, real, fake, torch.arange(40) % 10)
    assert set(result) == {"classifier_fd", "class_accuracy", "precision", "recall"}
    assert 0.0 <= result["class_accuracy"] <= 1.0
    path = save_sample_grid(fake, tmp_path / "grid" / "samples.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
