"""DRSF detection parts (pure torch): gradient scaling/reversal, domain heads and losses, block
masks, pseudo-label selection, the EMA teacher."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robust_lightning.errors import InvalidArgumentError
from robust_lightning.lightning_modules.drsf.detection_model import (
    EMATeacher,
    ImageDomainHead,
    InstanceDomainHead,
    block_mask,
    capture_outputs,
    consistency_loss,
    gather_locations,
    image_domain_loss,
    instance_domain_loss,
    scale_gradient,
    select_pseudo_labels,
    top_locations,
)


def test_scale_gradient_is_identity_forward_and_scales_or_reverses_backward() -> None:
    x = torch.randn(5, requires_grad=True)
    for weight in (-0.025, 0.01, 0.0):
        x.grad = None
        y = scale_gradient(x, weight)
        assert torch.equal(y, x)
        (y * torch.arange(5.0)).sum().backward()
        assert torch.allclose(x.grad, weight * torch.arange(5.0))
    with pytest.raises(InvalidArgumentError):
        scale_gradient(x, float("nan"))


def test_reversed_domain_gradient_reaches_the_backbone_with_opposite_sign() -> None:
    """The head descends the domain loss; the backbone behind the GRL gets -w times that gradient."""
    torch.manual_seed(0)
    backbone = nn.Conv2d(1, 4, 3, padding=1)
    head = ImageDomainHead(4, num_levels=1, hidden=8)
    images = torch.rand(4, 1, 8, 8)
    domain = torch.tensor([1.0, 1.0, 0.0, 0.0])

    def backbone_grad(weight: float) -> torch.Tensor:
        backbone.zero_grad()
        head.zero_grad()
        loss = image_domain_loss(head([scale_gradient(backbone(images), weight)]), domain)
        loss.backward()
        return backbone.weight.grad.clone()

    plain = backbone_grad(1.0)
    reversed_ = backbone_grad(-0.025)
    assert plain.abs().sum() > 0
    assert torch.allclose(reversed_, -0.025 * plain, atol=1e-9, rtol=1e-4)


def test_domain_heads_shapes_init_and_losses_are_finite() -> None:
    head = ImageDomainHead(8, num_levels=2, hidden=16)
    features = [torch.randn(3, 8, 8, 8), torch.randn(3, 8, 4, 4)]
    logits = head(features)
    assert [tuple(x.shape) for x in logits] == [(3, 1, 8, 8), (3, 1, 4, 4)]
    assert all(float(m.weight.detach().std()) < 0.01 for m in head.modules() if isinstance(m, nn.Conv2d))
    domain = torch.tensor([1.0, 0.0, 0.0])
    loss = image_domain_loss(logits, domain)
    # Near-zero init: logits ~ 0, BCE ~ ln 2.
    assert torch.isfinite(loss) and abs(float(loss) - 0.6931) < 1e-2
    instance = InstanceDomainHead(8, hidden=32)
    out = instance(torch.randn(10, 8))
    assert out.shape == (10, 1)
    assert torch.isfinite(instance_domain_loss(out, torch.randint(0, 2, (10,))))
    assert float(consistency_loss(torch.full((10, 1), 0.2), torch.full((10, 1), 0.7))) == pytest.approx(0.5)
    with pytest.raises(InvalidArgumentError):
        consistency_loss(torch.zeros(3, 1), torch.zeros(4, 1))
    with pytest.raises(InvalidArgumentError):
        head(features[:1])


def test_top_locations_pick_the_highest_scores_across_levels() -> None:
    level0 = torch.zeros(2, 3, 4, 4)
    level1 = torch.zeros(2, 3, 2, 2)
    level0[0, 1, 2, 3] = 5.0  # image 0, flat index 11 of level 0
    level1[0, 2, 1, 0] = 4.0  # image 0, flat index 2 of level 1
    level1[1, 0, 0, 1] = 3.0  # image 1, flat index 1 of level 1
    locations = top_locations([level0, level1], k=2)
    chosen0 = set(zip(locations[0][0].tolist(), locations[0][1].tolist(), strict=True))
    chosen1 = set(zip(locations[1][0].tolist(), locations[1][1].tolist(), strict=True))
    assert (0, 11) in chosen0 and (0, 2) in chosen1 and (1, 1) in chosen1
    assert len(chosen0) + len(chosen1) == 4  # k per image
    maps = [torch.arange(2 * 5 * 16.0).view(2, 5, 4, 4), torch.arange(2 * 5 * 4.0).view(2, 5, 2, 2)]
    vectors = gather_locations(maps, locations)
    assert vectors.shape == (4, 5)
    b, i = locations[0]
    assert torch.equal(vectors[: len(b)], maps[0].flatten(2)[b, :, i])


def test_block_mask_has_the_block_size_and_ratio() -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(64, 1, 64, 96)
    masked, keep = block_mask(images, block_size=16, ratio=0.5, fill=0.5, generator=generator)
    assert keep.shape == (64, 1, 64, 96)
    # Constant on each 16x16 block, and the blocks' grid is 4 x 6.
    blocks = keep.view(64, 1, 4, 16, 6, 16)
    assert torch.equal(blocks.amax(dim=(3, 5)), blocks.amin(dim=(3, 5)))
    assert abs(float(keep.mean()) - 0.5) < 0.05
    assert torch.equal(masked[keep.expand_as(masked) == 1], images[keep.expand_as(images) == 1])
    assert bool((masked[keep.expand_as(masked) == 0] == 0.5).all())
    _, sparse = block_mask(images, block_size=32, ratio=0.9, generator=generator)
    assert abs(float(sparse.mean()) - 0.1) < 0.05
    with pytest.raises(InvalidArgumentError, match="block_size must be a positive int, got 0"):
        block_mask(images, block_size=0)
    with pytest.raises(InvalidArgumentError, match=r"ratio must be a float in \[0, 1\), got 1.0"):
        block_mask(images, ratio=1.0)


def test_pseudo_labels_keep_scores_at_or_above_the_threshold() -> None:
    boxes = [torch.tensor([[0, 0, 4, 4], [1, 1, 5, 5.0]]), torch.tensor([[2, 2, 6, 6.0]]), torch.zeros(0, 4)]
    scores = [torch.tensor([0.8, 0.79]), torch.tensor([0.5]), torch.zeros(0)]
    labels = [torch.tensor([1, 2]), torch.tensor([0]), torch.zeros(0, dtype=torch.long)]
    kept, kept_boxes, kept_labels = select_pseudo_labels(boxes, scores, labels, threshold=0.8)
    assert kept == [0]
    assert torch.equal(kept_boxes[0], boxes[0][:1]) and kept_labels[0].tolist() == [1]
    kept, _, _ = select_pseudo_labels(boxes, scores, labels, threshold=0.4)
    assert kept == [0, 1]
    with pytest.raises(InvalidArgumentError):
        select_pseudo_labels(boxes, scores, labels, threshold=1.5)


def test_ema_teacher_copies_then_averages_with_alpha() -> None:
    student = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    teacher = EMATeacher(student, alpha=0.9)
    with torch.no_grad():
        student[0].weight.fill_(1.0)
    teacher.update(student, step=0)
    assert torch.equal(teacher.model[0].weight, student[0].weight)
    with torch.no_grad():
        student[0].weight.fill_(3.0)
    student[1].num_batches_tracked.fill_(7)
    teacher.update(student, step=1)
    assert torch.allclose(teacher.model[0].weight, torch.full((2, 3), 0.9 * 1.0 + 0.1 * 3.0))
    assert int(teacher.model[1].num_batches_tracked) == 7
    assert not any(p.requires_grad for p in teacher.parameters())
    teacher.train()
    assert not teacher.model.training
    with pytest.raises(InvalidArgumentError):
        EMATeacher(student, alpha=1.0)


def test_capture_outputs_collects_every_call_and_unhooks() -> None:
    layer = nn.Identity()
    with capture_outputs(layer) as outputs:
        layer(torch.ones(1))
        layer(torch.zeros(2))
    layer(torch.ones(3))
    assert [tuple(o.shape) for o in outputs] == [(1,), (2,)]
