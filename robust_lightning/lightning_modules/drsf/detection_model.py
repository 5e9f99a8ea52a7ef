"""DRSF for detection: the parts of the authors' released detector, in plain torch.

The released code (``fantasioly/DRSF``, a maskrcnn-benchmark Faster R-CNN R-101-C4 with
Domain Adaptive Faster R-CNN heads and MIC's masked EMA-teacher self-training) contributes:

* an image-level domain classifier on the backbone features: per location 1x1 conv (512), ReLU,
  1x1 conv to one logit, weights ``N(0, 0.001)``, behind a gradient-reversal layer of weight
  ``DA_IMG_GRL_WEIGHT = 0.025`` (``modeling/da_heads/da_heads.py``: ``DAImgHead``,
  ``GradientScalarLayer(-1.0 * DA_IMG_GRL_WEIGHT)``); its loss is the BCE of every location
  (levels upsampled to the first) against the domain label, source = 1
  (``modeling/da_heads/loss.py``);
* an instance-level domain classifier on the RoI features of the sampled proposals: 1024-1024-1
  MLP with dropout 0.5, weights ``N(0, 0.01)``, behind a reversal of weight
  ``DA_INS_GRL_WEIGHT = 0.1`` (``DAInsHead``);
* a consistency term: L1 between the image-level domain probability pooled over each RoI and
  that RoI's instance-level probability; both heads are re-applied to features behind
  *non-reversing* gradient scalers ``COS_WEIGHT * DA_*_GRL_WEIGHT`` (``COS_WEIGHT = 0.1``), so
  the features are pulled towards agreement with weight 0.1 while the heads get the full
  gradient (``da_heads.py``: ``grl_img_consist``, ``grl_ins_consist``);
* masked pseudo-label training (``engine/trainer.py``: ``do_mask_da_train``): an EMA teacher
  (``modeling/teacher.py``, ``alpha = TEACHER_ALPHA = 0.9``, copied from the student at
  iteration 0, updated every iteration before it labels) predicts on the unmasked target
  images; boxes with score ``>= PSEUDO_LABEL_THRESHOLD = 0.8`` become labels
  (``process_pred2label``) for the student on the *masked* target images
  (``modeling/masking.py``: blocks of ``MASKING_BLOCK_SIZE = 32`` pixels dropped with
  probability ``MASKING_RATIO = 0.5``); only the classification losses of that pass count
  (``loss_classifier_mask``, ``loss_objectness_mask`` times ``PSEUDO_LABEL_LAMBDA = 1``; box
  regression and domain losses of the masked pass are multiplied by 0).

This module holds those parts detector-agnostically; ``detection_lightning_module.py`` wires
them into an mmdet detector.
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from typing_extensions import override

from robust_lightning._validation import check_fraction, check_positive_int
from robust_lightning.errors import InvalidArgumentError

__all__ = [
    "EMATeacher",
    "ImageDomainHead",
    "InstanceDomainHead",
    "block_mask",
    "capture_outputs",
    "consistency_loss",
    "image_domain_loss",
    "instance_domain_loss",
    "scale_gradient",
    "select_pseudo_labels",
    "top_locations",
]


class _ScaleGradient(torch.autograd.Function):
    @override
    @staticmethod
    def forward(ctx, x: Tensor, weight: float) -> Tensor:  # type: ignore[override]
        ctx.weight = weight
        return x.view_as(x)

    @override
    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return ctx.weight * grad, None


def scale_gradient(x: Tensor, weight: float) -> Tensor:
    """Identity forward, gradient times ``weight`` backward (``GradientScalarLayer`` of the
    released code: ``weight < 0`` is gradient reversal, ``weight > 0`` a scaled pass-through).
    """
    weight = float(weight)
    if not math.isfinite(weight):
        raise InvalidArgumentError(f"gradient scale must be finite, got {weight!r}")
    return _ScaleGradient.apply(x, weight)


class ImageDomainHead(nn.Module):
    """Image-level domain classifier: per location 1x1 conv, ReLU, 1x1 conv to one logit.

    One head per feature level as ``DAImgHead`` (which keeps one pair of convs per FPN level).

    Args:
        in_channels: Channels of every level.
        num_levels: Feature levels.
        hidden: Hidden channels (512 in the released code).
    """

    def __init__(self, in_channels: int, num_levels: int, hidden: int = 512) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("num_levels", num_levels), ("hidden", hidden)):
            check_positive_int(name, value)
        self.levels = nn.ModuleList(
            nn.Sequential(nn.Conv2d(in_channels, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, 1, 1))
            for _ in range(num_levels)
        )
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.001)
                nn.init.zeros_(module.bias)

    @override
    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        """Domain logits ``(B, 1, H_l, W_l)`` per level."""
        if len(features) != len(self.levels):
            raise InvalidArgumentError(f"ImageDomainHead has {len(self.levels)} levels, got {len(features)} feature maps")
        return [head(x) for head, x in zip(self.levels, features, strict=True)]


class InstanceDomainHead(nn.Module):
    """Instance-level domain classifier: ``in -> hidden -> hidden -> 1`` MLP, ReLU, dropout 0.5.

    Args:
        in_channels: Length of an instance feature vector.
        hidden: Hidden width (1024 in the released code).
        dropout: Dropout after each hidden layer (0.5).
    """

    def __init__(self, in_channels: int, hidden: int = 1024, dropout: float = 0.5) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("hidden", hidden)):
            check_positive_int(name, value)
        check_fraction("dropout", dropout)
        self.net = nn.Sequential(nn.Linear(in_channels, hidden), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 1))
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.01)
                nn.init.zeros_(module.bias)

    @override
    def forward(self, x: Tensor) -> Tensor:
        """Domain logits ``(N, 1)`` of ``(N, in_channels)`` instance features."""
        return self.net(x)


def _domain_targets(domain: Tensor, like: Tensor) -> Tensor:
    return domain.to(like.dtype).view(-1, *([1] * (like.dim() - 1))).expand_as(like)


def image_domain_loss(logits: Sequence[Tensor], domain: Tensor) -> Tensor:
    """BCE of every location of every level (upsampled to the first level) against ``domain``
    ``(B,)`` (1 = source, 0 = target), averaged (``DALossComputation``: "new da img").
    """
    size = logits[0].shape[-2:]
    losses = []
    for level in logits:
        level = F.interpolate(level.float(), size=size, mode="bilinear", align_corners=True)
        losses.append(F.binary_cross_entropy_with_logits(level, _domain_targets(domain, level), reduction="none"))
    return torch.stack(losses).mean()


def instance_domain_loss(logits: Tensor, domain: Tensor) -> Tensor:
    """BCE of instance logits ``(N, 1)`` against their images' domain labels ``(N,)``."""
    return F.binary_cross_entropy_with_logits(logits.float().reshape(-1), domain.float().reshape(-1))


def consistency_loss(image_probability: Tensor, instance_probability: Tensor) -> Tensor:
    """L1 between the image-level domain probability at each instance and the instance-level one."""
    if image_probability.shape != instance_probability.shape:
        raise InvalidArgumentError(
            f"consistency needs one image-level value per instance, got {tuple(image_probability.shape)} "
            f"and {tuple(instance_probability.shape)}"
        )
    return F.l1_loss(image_probability.float(), instance_probability.float())


def top_locations(scores: Sequence[Tensor], k: int) -> list[tuple[Tensor, Tensor]]:
    """Per image, the ``k`` locations (over all levels) with the highest predicted class score.

    Our reading of "instance" for a one-stage detector (no RoIs): the released code samples
    512 proposals per image for its instance head (``subsample_for_da``); a dense head's
    instances are the locations it predicts objects at. Selection is detached.

    Args:
        scores: Per level ``(B, K, H_l, W_l)`` class logits.
        k: Locations per image.

    Returns:
        Per level ``(batch_index, flat_location_index)`` of the selected locations.
    """
    if k < 1:
        raise InvalidArgumentError(f"k must be >= 1, got {k!r}")
    with torch.no_grad():
        per_level = [s.detach().amax(dim=1).flatten(1) for s in scores]  # (B, HW_l)
        sizes = [p.shape[1] for p in per_level]
        flat = torch.cat(per_level, dim=1)
        chosen = flat.topk(min(k, flat.shape[1]), dim=1).indices  # (B, k)
        batch = torch.arange(flat.shape[0], device=flat.device)[:, None].expand_as(chosen)
        out, start = [], 0
        for size in sizes:
            inside = (chosen >= start) & (chosen < start + size)
            out.append((batch[inside], chosen[inside] - start))
            start += size
    return out


def gather_locations(maps: Sequence[Tensor], locations: Sequence[tuple[Tensor, Tensor]]) -> Tensor:
    """``(N, C)`` vectors of ``maps`` (per level ``(B, C, H, W)``) at :func:`top_locations`."""
    vectors = [m.flatten(2)[b, :, i] for m, (b, i) in zip(maps, locations, strict=True)]
    return torch.cat(vectors, dim=0)


@contextmanager
def capture_outputs(module: nn.Module) -> Iterator[list[Tensor]]:
    """Collects ``module``'s outputs of every call inside the block (e.g. per feature level)."""
    outputs: list[Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, out: outputs.append(out))
    try:
        yield outputs
    finally:
        handle.remove()


def block_mask(images: Tensor, block_size: int = 32, ratio: float = 0.5, fill: float = 0.0,
               generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """MIC's masking (``modeling/masking.py``): drop ``block_size`` blocks with probability ``ratio``.

    The block grid is ``round(H / block_size) x round(W / block_size)``, kept where
    ``U(0, 1) > ratio``, upsampled by nearest neighbour to the image. The released code masks
    the mean-subtracted tensor, so dropped pixels equal the dataset mean; ``fill`` is that value
    in our [0, 1] pixels.

    Returns:
        ``(masked_images, keep)`` with ``keep`` ``(B, 1, H, W)`` in {0, 1}.
    """
    if images.dim() != 4:
        raise InvalidArgumentError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    check_positive_int("block_size", block_size)
    check_fraction("ratio", ratio)
    batch, _, height, width = images.shape
    grid = (batch, 1, max(1, round(height / block_size)), max(1, round(width / block_size)))
    keep = (torch.rand(grid, generator=generator, device="cpu") > ratio).float().to(images.device)
    keep = F.interpolate(keep, size=(height, width), mode="nearest").to(images.dtype)
    return images * keep + fill * (1 - keep), keep


def select_pseudo_labels(boxes: Sequence[Tensor], scores: Sequence[Tensor], labels: Sequence[Tensor],
                         threshold: float = 0.8) -> tuple[list[int], list[Tensor], list[Tensor]]:
    """Teacher detections with ``score >= threshold`` (``process_pred2label``).

    Returns:
        ``(image_indices, boxes, labels)`` for the images that keep at least one box (the
        released code trains the masked pass only on those).
    """
    if not 0.0 <= float(threshold) <= 1.0:
        raise InvalidArgumentError(f"pseudo-label threshold must be in [0, 1], got {threshold!r}")
    kept_images, kept_boxes, kept_labels = [], [], []
    for i, (b, s, y) in enumerate(zip(boxes, scores, labels, strict=True)):
        keep = s >= threshold
        if bool(keep.any()):
            kept_images.append(i)
            kept_boxes.append(b[keep].detach())
            kept_labels.append(y[keep].detach())
    return kept_images, kept_boxes, kept_labels


class EMATeacher(nn.Module):
    """Exponential moving average of a student module (``modeling/teacher.py``).

    ``update(student, step)`` copies the student at step 0 and afterwards sets every floating
    point entry of the state dict to ``alpha * teacher + (1 - alpha) * student`` (BatchNorm
    statistics included, as the released code averages the whole state dict); integer entries
    (BatchNorm's batch counters) are copied. The teacher always predicts in eval mode.

    Args:
        student: Module to follow (deep-copied; the copy never gets gradients).
        alpha: EMA coefficient in [0, 1) (0.9 in the released code).
    """

    def __init__(self, student: nn.Module, alpha: float = 0.9) -> None:
        super().__init__()
        if not 0.0 <= float(alpha) < 1.0:
            raise InvalidArgumentError(f"teacher alpha must be in [0, 1), got {alpha!r}")
        self.alpha = float(alpha)
        self.model = copy.deepcopy(student)
        self.model.requires_grad_(False)
        self.model.eval()

    @torch.no_grad()
    def update(self, student: nn.Module, step: int) -> None:
        student_state = student.state_dict()
        if step == 0:
            self.model.load_state_dict(student_state)
            return
        new_state = OrderedDict()
        for key, value in self.model.state_dict().items():
            if key not in student_state:
                raise KeyError(f"teacher entry {key!r} is not in the student")
            if value.is_floating_point():
                new_state[key] = self.alpha * value + (1.0 - self.alpha) * student_state[key].to(value)
            else:
                new_state[key] = student_state[key].clone()
        self.model.load_state_dict(new_state)

    @override
    def train(self, mode: bool = True) -> EMATeacher:
        # The teacher labels in eval mode whatever the parent's mode (teacher.py sets
        # m.training = False on every module before predicting).
        super().train(mode)
        self.model.eval()
        return self
