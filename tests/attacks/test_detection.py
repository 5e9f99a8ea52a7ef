"""Detection attacks on a detector-like loss dict (no mmdet needed)."""

from __future__ import annotations

import pytest
import torch

from robust_lightning.attacks.detection import (
    DetectionAttack,
    detection_attack,
    split_detection_losses,
)


def test_split_sorts_mmdet_loss_names() -> None:
    t = torch.tensor
    losses = {
        "loss_rpn_cls": [t(1.0), t(2.0)], "loss_rpn_bbox": [t(0.5), t(0.5)], "loss_cls": t(3.0), "acc": t(99.0),
        "loss_bbox": t(4.0), "loss_centerness": t(0.25), "loss_obj": t(0.5), "loss_l1": t(0.75), "loss_aux": t(0.1),
    }
    parts = split_detection_losses(losses)
    assert float(parts["cls"]) == pytest.approx(1 + 2 + 3 + 0.5)
    assert float(parts["loc"]) == pytest.approx(0.5 + 0.5 + 4 + 0.25 + 0.75)
    assert float(parts["other"]) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="no loss entries"):
        split_detection_losses({"acc": t(1.0)})


def _toy_parts(x: torch.Tensor) -> dict[str, torch.Tensor]:
    # "cls" grows with the left half's brightness, "loc" with the right half's darkness.
    left, right = x[..., :4].mean(), x[..., 4:].mean()
    return {"cls": 2 * left, "loc": 3 * (1 - right), "other": x.new_zeros(())}


def test_objectives_move_their_own_loss_within_the_budget() -> None:
    x = torch.full((3, 1, 8, 8), 0.5)
    eps = 4 / 255
    x_cls = detection_attack(_toy_parts, x, objective="cls", eps=eps, alpha=eps, steps=1)
    assert (x_cls - x).abs().max() <= eps + 1e-6 and x_cls.min() >= 0 and x_cls.max() <= 1
    assert float(_toy_parts(x_cls)["cls"]) > float(_toy_parts(x)["cls"])
    assert torch.equal(x_cls[..., 4:], x[..., 4:])  # the cls loss does not depend on the right half
    x_loc = detection_attack(_toy_parts, x, objective="loc", eps=eps, alpha=eps / 4, steps=5)
    assert float(_toy_parts(x_loc)["loc"]) > float(_toy_parts(x)["loc"])
    x_both = detection_attack(_toy_parts, x, objective="combined", eps=eps, alpha=eps, steps=1)
    assert torch.allclose((x_both - x).abs(), torch.full_like(x, eps))


def test_mtd_keeps_the_example_with_the_larger_total_loss() -> None:
    x = torch.full((2, 1, 8, 8), 0.5)
    eps = 8 / 255
    x_loc = detection_attack(_toy_parts, x, objective="loc", eps=eps, alpha=eps)
    x_mtd = detection_attack(_toy_parts, x, objective="mtd", eps=eps, alpha=eps)
    # The loc loss has the larger gain (3 vs 2), so MTD picks the loc example.
    assert torch.equal(x_mtd, x_loc)


def test_attack_class_names_and_validation() -> None:
    assert DetectionAttack("mtd", eps="4/255").name == "mtd_fgsm_eps4"
    attack = DetectionAttack("cls", eps="8/255", steps=10)
    assert attack.name == "cls_pgd10_eps8" and attack.alpha == pytest.approx(2 / 255)
    with pytest.raises(ValueError, match="objective"):
        DetectionAttack("boxes")
    with pytest.raises(ValueError, match="steps"):
        DetectionAttack(steps=0)
    with pytest.raises(ValueError, match="eps"):
        DetectionAttack(eps="a lot")
    x = torch.full((1, 1, 8, 8), 0.5)
    assert torch.allclose((attack(_toy_parts, x) - x)[..., :4], torch.full((1, 1, 8, 4), 8 / 255))
