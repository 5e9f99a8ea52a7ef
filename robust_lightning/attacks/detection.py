"""Attacks on object detectors' training losses (mmdet loss dicts or any ``name -> loss`` dict).

A detector's loss has a localisation part (box regression, IoU, centerness) and a
classification part (class scores, objectness). Following KGAT's released code
(``shukunxiong/KGAT``: ``attack/PGD.py``, ``robust/MTD.py``), which follows MTD (Zhang & Wang,
"Towards Adversarially Robust Object Detection", ICCV 2019), an example is crafted
against one part or the other, and MTD keeps, for the batch, the one with the larger total
loss. The released code uses one signed-gradient step (``eps = alpha = 8/255`` in training,
``4/255`` at evaluation); here any number of PGD steps runs through the shared attack core
(:func:`robust_lightning.attacks.core.pgd`: fused step, projection and clamp).

Per-sample losses: detection losses are normalised over the whole batch (e.g. by the number
of positive anchors), so they do not split into per-image terms. The core's ``loss_fn``
returns the batch loss spread evenly over the batch; each image's gradient is then a positive
multiple of the gradient of its own loss terms, which leaves L-inf (sign) and L2 (normalised)
steps unchanged.

Gray images: infrared inputs are one channel ``(B, 1, H, W)`` that the detector replicates to
RGB, so the perturbation is shared by the three channels by construction. The released code
gets the same effect for 3-channel gray images by averaging its RGB perturbation over channels.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal

import torch
from torch import Tensor

from robust_lightning._validation import check_int
from robust_lightning.attacks.core import Norm, eps_tag, parse_budget, pgd

__all__ = [
    "DETECTION_OBJECTIVES",
    "DetectionAttack",
    "DetectionObjective",
    "LossPartsFn",
    "detection_attack",
    "split_detection_losses",
]

DetectionObjective = Literal["mtd", "cls", "loc", "combined"]
DETECTION_OBJECTIVES: tuple[str, ...] = ("mtd", "cls", "loc", "combined")
LossPartsFn = Callable[[Tensor], Mapping[str, Tensor]]

# Substrings of loss names (mmdet's conventions) that mark a localisation loss; names with
# "cls" or "obj" are classification. Checked in this order, so "loss_rpn_bbox" is localisation
# and "loss_rpn_cls" classification.
_LOC_MARKERS: tuple[str, ...] = ("bbox", "box", "iou", "centerness", "dfl", "l1", "reg")
_CLS_MARKERS: tuple[str, ...] = ("cls", "obj")


def _total(value: Tensor | list[Tensor] | tuple[Tensor, ...]) -> Tensor:
    if isinstance(value, Tensor):
        return value.sum() if value.dim() else value
    return sum((v.sum() for v in value), torch.zeros((), device=value[0].device)) if value else torch.zeros(())


def split_detection_losses(losses: Mapping[str, Tensor | list[Tensor]]) -> dict[str, Tensor]:
    """Sums a detector's loss dict into ``{"loc", "cls", "other"}`` scalars.

    Only entries whose name contains ``"loss"`` count (mmdet also returns metrics such as
    ``acc``); lists (per feature level) are summed. Classification: names containing ``cls`` or
    ``obj``; localisation: ``bbox``, ``box``, ``iou``, ``centerness``, ``dfl``, ``l1``, ``reg``;
    anything else is ``other`` (kept in the training loss, unweighted, and in MTD's total).

    Raises:
        ValueError: If no entry is a loss.
    """
    parts: dict[str, Tensor] = {}
    for name, value in losses.items():
        if "loss" not in name:
            continue
        lowered = name.lower()
        if any(m in lowered for m in _CLS_MARKERS):
            key = "cls"
        elif any(m in lowered for m in _LOC_MARKERS):
            key = "loc"
        else:
            key = "other"
        total = _total(value)
        parts[key] = parts[key] + total if key in parts else total
    if not parts:
        raise ValueError(f"the detector returned no loss entries (names containing 'loss'): got {sorted(losses)}")
    zero = next(iter(parts.values())).new_zeros(())
    return {key: parts.get(key, zero) for key in ("loc", "cls", "other")}


def _objective_loss(parts: Mapping[str, Tensor], objective: str) -> Tensor:
    if objective == "cls":
        return parts["cls"]
    if objective == "loc":
        return parts["loc"]
    return parts["loc"] + parts["cls"]


def detection_attack(
    loss_parts_fn: LossPartsFn,
    x: Tensor,
    objective: DetectionObjective = "mtd",
    eps: float = 8 / 255,
    alpha: float = 8 / 255,
    steps: int = 1,
    norm: Norm = "linf",
    random_start: bool = False,
    bounds: tuple[float, float] = (0.0, 1.0),
    generator: torch.Generator | None = None,
) -> Tensor:
    """Adversarial images against a detector's loss.

    Args:
        loss_parts_fn: ``images -> {"loc", "cls", "other"}`` scalar losses of the batch
            (e.g. :func:`split_detection_losses` of an mmdet ``loss`` call), with the model in
            the mode the caller chose (see :func:`~robust_lightning.attacks.core.attack_mode`).
        x: Clean images ``(B, C, H, W)`` in ``bounds``.
        objective: ``"cls"``, ``"loc"``, ``"combined"`` (their sum) or ``"mtd"``: one example
            from each of ``cls`` and ``loc``, and the batch whose total (loc + cls + other)
            loss is larger is returned (``robust/MTD.py``).
        eps: L-inf (or L2) radius.
        alpha: Step size; ``steps=1, alpha=eps, random_start=False`` is the released code's FGSM.
        steps: Gradient steps (PGD when > 1).
        norm: ``"linf"`` or ``"l2"``.
        random_start: Start from a random point of the ball (Madry et al.).
        bounds: Valid pixel range.
        generator: Randomness of the random start.

    Returns:
        Detached adversarial images, same shape as ``x``.
    """
    if objective not in DETECTION_OBJECTIVES:
        raise ValueError(f"objective must be one of {DETECTION_OBJECTIVES}, got {objective!r}")
    batch = x.shape[0]

    def per_sample(name: str) -> Callable[[Tensor], Tensor]:
        def loss_fn(images: Tensor) -> Tensor:
            loss = _objective_loss(loss_parts_fn(images), name)
            return (loss / batch).expand(batch)

        return loss_fn

    def craft(name: str) -> Tensor:
        return pgd(per_sample(name), x, eps=eps, alpha=alpha, steps=steps, norm=norm,
                   random_start=random_start, bounds=bounds, generator=generator)

    if objective != "mtd":
        return craft(objective)
    x_loc, x_cls = craft("loc"), craft("cls")
    with torch.inference_mode(False), torch.no_grad():
        loss_loc = sum(loss_parts_fn(x_loc).values())
        loss_cls = sum(loss_parts_fn(x_cls).values())
    return x_loc if float(loss_loc) > float(loss_cls) else x_cls


class DetectionAttack:
    """Config-friendly detection attack (``class_path: robust_lightning.attacks.DetectionAttack``).

    Args:
        objective: ``"mtd"``, ``"cls"``, ``"loc"`` or ``"combined"`` (see :func:`detection_attack`).
        eps: Radius, a number or a fraction string such as ``"8/255"``.
        alpha: Step size; ``None`` uses ``eps`` for one step and ``eps / 4`` for PGD.
        steps: Gradient steps.
        norm: ``"linf"`` or ``"l2"``.
        random_start: Random start in the ball.
        bounds: Valid pixel range.
    """

    def __init__(
        self,
        objective: DetectionObjective = "mtd",
        eps: float | str = "8/255",
        alpha: float | str | None = None,
        steps: int = 1,
        norm: Norm = "linf",
        random_start: bool = False,
        bounds: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        if objective not in DETECTION_OBJECTIVES:
            raise ValueError(f"objective must be one of {DETECTION_OBJECTIVES}, got {objective!r}")
        check_int("steps", steps, minimum=1)
        if norm not in ("linf", "l2"):
            raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
        self.objective = objective
        self.eps = parse_budget(eps, "eps")
        if self.eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps!r}")
        default_alpha = self.eps if steps == 1 else self.eps / 4
        self.alpha = parse_budget(alpha, "alpha") if alpha is not None else default_alpha
        if self.eps > 0 and not self.alpha > 0:
            raise ValueError(f"alpha must be > 0, got {alpha!r}")
        self.steps = steps
        self.norm = norm
        self.random_start = bool(random_start)
        self.bounds = (float(bounds[0]), float(bounds[1]))

    @property
    def name(self) -> str:
        """Metric-friendly name, e.g. ``mtd_fgsm_eps4`` or ``cls_pgd10_eps8``."""
        kind = "fgsm" if self.steps == 1 else f"pgd{self.steps}"
        norm = "" if self.norm == "linf" else "_l2"
        return f"{self.objective}_{kind}{norm}_{eps_tag(self.eps)}"

    def __call__(self, loss_parts_fn: LossPartsFn, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return detection_attack(
            loss_parts_fn, x, objective=self.objective, eps=self.eps, alpha=self.alpha or 1.0,
            steps=self.steps, norm=self.norm, random_start=self.random_start, bounds=self.bounds,
            generator=generator,
        )

    def __repr__(self) -> str:
        return (f"DetectionAttack(objective={self.objective!r}, eps={self.eps:.6g}, alpha={self.alpha:.6g}, "
                f"steps={self.steps}, norm={self.norm!r}, random_start={self.random_start})")
