"""Sample-quality metrics in the feature space of a digit classifier, and sample grids.

"classifier-FD" is the Frechet distance (Heusel et al. 2017, eq. 6 of the FID paper) between
real and generated images in the penultimate-layer features of a small digit classifier
(:class:`~robust_lightning.lightning_modules.soft_dimo.DigitFeatureClassifier`), computed with
torchmetrics' ``FrechetInceptionDistance`` given that classifier as its feature extractor. It is
not FID: the features are not Inception's, so values are comparable only under one classifier.
Precision/recall are the k-nearest-neighbour manifold estimates of Kynkaanniemi et al. 2019
(torchmetrics has no implementation).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance

from robust_lightning.errors import InvalidArgumentError

__all__ = ["ClassifierFeatures", "classifier_frechet_distance", "precision_recall", "sample_quality",
           "save_sample_grid"]


class ClassifierFeatures(nn.Module):
    """Wraps a classifier exposing ``features(images)`` as a torchmetrics feature extractor."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier
        self.num_features = int(classifier.num_features)

    def forward(self, images: Tensor) -> Tensor:
        return self.classifier.features(images.float())


@torch.no_grad()
def classifier_frechet_distance(classifier: nn.Module, real: Tensor, fake: Tensor) -> float:
    """classifier-FD between ``real`` and ``fake`` images (``(N, C, H, W)`` in ``[0, 1]``)."""
    if real.shape[0] < 2 or fake.shape[0] < 2:
        raise InvalidArgumentError(f"classifier-FD needs >= 2 images per set, got {real.shape[0]} and {fake.shape[0]}")
    metric = FrechetInceptionDistance(feature=ClassifierFeatures(classifier), normalize=True).to(real.device)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    return float(metric.compute())


def _kth_neighbour_radius(features: Tensor, k: int) -> Tensor:
    distances = torch.cdist(features, features)
    # Column 0 is the point itself (distance 0).
    return distances.kthvalue(k + 1, dim=1).values


@torch.no_grad()
def precision_recall(real_features: Tensor, fake_features: Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) with ``k``-NN radii.

    Precision: share of fake points inside the union of real k-NN balls; recall: share of real
    points inside the union of fake k-NN balls.
    """
    if min(real_features.shape[0], fake_features.shape[0]) <= k:
        raise InvalidArgumentError(f"precision/recall with k={k} needs more than {k} points per set")
    real_radius = _kth_neighbour_radius(real_features, k)
    fake_radius = _kth_neighbour_radius(fake_features, k)
    cross = torch.cdist(fake_features, real_features)
    precision = (cross <= real_radius.unsqueeze(0)).any(dim=1).float().mean()
    recall = (cross.T <= fake_radius.unsqueeze(0)).any(dim=1).float().mean()
    return float(precision), float(recall)


@torch.no_grad()
def sample_quality(classifier: nn.Module, real: Tensor, fake: Tensor, fake_labels: Tensor, k: int = 3) -> dict[str, float]:
    """classifier-FD, class accuracy of the samples, precision and recall, under one classifier.

    Args:
        classifier: A ``DigitFeatureClassifier`` (or any module with ``features`` and a forward
            returning logits); put in eval mode here.
        real: Real images ``(N, C, H, W)``.
        fake: Generated images ``(M, C, H, W)``.
        fake_labels: Classes the samples were generated for ``(M,)``.
        k: Neighbourhood size of precision/recall.
    """
    was_training = classifier.training
    classifier.eval()
    real_features = classifier.features(real.float())
    fake_features = classifier.features(fake.float())
    accuracy = (classifier(fake.float()).argmax(-1) == fake_labels).float().mean()
    precision, recall = precision_recall(real_features, fake_features, k)
    result = {"classifier_fd": classifier_frechet_distance(classifier, real, fake),
              "class_accuracy": float(accuracy), "precision": precision, "recall": recall}
    classifier.train(was_training)
    return result


def save_sample_grid(images: Tensor, path: str | Path, nrow: int = 10) -> Path:
    """Writes a PNG grid of ``images`` (in ``[0, 1]``) and returns its path."""
    from torchvision.utils import save_image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(images.detach().float().clamp(0, 1).cpu(), path, nrow=nrow, padding=1, pad_value=0.5)
    return path
