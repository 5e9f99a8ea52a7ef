"""KGAT's thermal-radiation knowledge: class gray-level order, its agreement and its reliability.

Objects of one class radiate at a characteristic level, so the rank order of the classes' mean
gray values is stable across images. KGAT (Zhao et al., code ``shukunxiong/KGAT``,
``nets/yolo_training.py``: ``Loss_Knowledge``, ``compute_grayscale_means``, ``compute_spearman``)
turns this into two scalar weights of the box-regression loss:

* relation factor ``w_rel = 1 - ln(1 + beta rho)`` (``beta = 0.5``), with ``rho`` the Spearman
  correlation between the per-class mean gray values under the predicted boxes and under the
  ground-truth boxes (plus a background entry): a detector whose boxes break the known order
  gets a larger localisation loss (``rho = -1`` gives 1.69, ``rho = 1`` gives 0.59);
* reliability factor ``w_rel2 = 0.95 + 0.1 sum_{i != j in U} |R_ij| / (n^2 - n)`` over the
  ``n`` classes ``U`` present in the batch, with ``R`` a class x class relation-stability
  matrix computed from the training set: stable relations count more.

All functions are pure torch (plus scipy's Spearman, as the released code uses) and
differentiable-free: the weights are constants of a step, as in the original.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from scipy import stats
from torch import Tensor

from robust_lightning.datamodules.infrared import to_gray

__all__ = [
    "background_gray_mean",
    "class_gray_means",
    "knowledge_gray_vectors",
    "relation_stability_matrix",
    "relation_weight",
    "reliability_weight",
    "spearman_rho",
    "to_gray",
]


def _pixel_boxes(boxes: Tensor, shape: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """Integer pixel bounds as the released code (truncation, half-open ``[y1:y2, x1:x2]``),
    clipped to the image (the released code clips the far edge to ``size - 1``, which drops the
    last row/column of boxes touching the border; we clip it to ``size``).
    """
    height, width = shape
    out = []
    for x1, y1, x2, y2 in boxes.detach().to("cpu", torch.float64).reshape(-1, 4).tolist():
        out.append((min(max(int(x1), 0), width - 1), min(max(int(y1), 0), height - 1),
                    min(max(int(x2), 0), width), min(max(int(y2), 0), height)))
    return out


def _box_region_means(gray: Tensor, boxes: Tensor) -> list[Tensor]:
    """Mean gray value inside each box; empty regions are skipped."""
    means = []
    for x1, y1, x2, y2 in _pixel_boxes(boxes, gray.shape):
        region = gray[y1:y2, x1:x2]
        if region.numel():
            means.append(region.mean())
    return means


def class_gray_means(gray: Tensor, boxes: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Per-class mean gray value of one image: the mean over the class's boxes of each box's mean.

    Args:
        gray: ``(H, W)`` gray image.
        boxes: ``(N, 4)`` xyxy pixel boxes.
        labels: ``(N,)`` class indices in ``[0, num_classes)``.
        num_classes: Number of classes ``K``.

    Returns:
        ``(K,)`` float tensor; 0 for classes without a (non-empty) box, as in the released code.
    """
    out = torch.zeros(num_classes, dtype=torch.float32, device=gray.device)
    for k in labels.unique().tolist():
        means = _box_region_means(gray, boxes[labels == k])
        if means:
            out[int(k)] = torch.stack(means).mean().float()
    return out


def background_gray_mean(gray: Tensor, boxes: Tensor) -> Tensor:
    """Mean gray value of the pixels outside every box (0 if boxes cover the image)."""
    outside = torch.ones_like(gray, dtype=torch.bool)
    for x1, y1, x2, y2 in _pixel_boxes(boxes, gray.shape):
        outside[y1:y2, x1:x2] = False
    if not bool(outside.any()):
        return gray.new_zeros(())
    return gray[outside].mean()


def knowledge_gray_vectors(
    images: Tensor,
    pred_boxes: Sequence[Tensor],
    pred_scores: Sequence[Tensor],
    pred_labels: Sequence[Tensor],
    gt_boxes: Sequence[Tensor],
    gt_labels: Sequence[Tensor],
    num_classes: int,
    topk: int = 5,
    score_threshold: float = 0.1,
) -> tuple[Tensor, Tensor]:
    """Batch-mean per-class gray vectors of the predictions and of the ground truth.

    Per image: for each class, the ``topk`` highest-scoring predicted boxes of that class with a
    score above ``score_threshold`` give the predicted class mean; the class's ground-truth boxes
    give the labelled one; a background entry (pixels outside the selected predicted boxes) is
    appended to both. The vectors are averaged over the batch (``compute_grayscale_means``).

    Returns:
        ``(pred, gt)``, each ``(K + 1,)``.
    """
    if images.dim() != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    predicted, labelled = [], []
    for i in range(images.shape[0]):
        gray = to_gray(images[i].detach().float())
        boxes, scores, labels = pred_boxes[i], pred_scores[i], pred_labels[i]
        selected_boxes, selected_labels = [], []
        for k in range(num_classes):
            mask = (labels == k) & (scores > score_threshold)
            if bool(mask.any()):
                order = scores[mask].argsort(descending=True)[:topk]
                selected_boxes.append(boxes[mask][order])
                selected_labels.append(labels[mask][order])
        sel_boxes = torch.cat(selected_boxes) if selected_boxes else boxes.new_zeros((0, 4))
        sel_labels = torch.cat(selected_labels) if selected_labels else labels.new_zeros((0,))
        background = background_gray_mean(gray, sel_boxes).float().reshape(1)
        predicted.append(torch.cat([class_gray_means(gray, sel_boxes, sel_labels, num_classes), background]))
        labelled.append(torch.cat([class_gray_means(gray, gt_boxes[i], gt_labels[i], num_classes), background]))
    return torch.stack(predicted).mean(0), torch.stack(labelled).mean(0)


def spearman_rho(predicted: Tensor, labelled: Tensor) -> float:
    """Spearman rank correlation of two gray vectors, 0 when it is undefined.

    Entries where both vectors are 0 (class absent in both) are dropped. As in the released
    ``compute_spearman``, rho is 0 when either filtered vector has a single positive entry or is
    constant; we also return 0 for fewer than two entries.

    Raises:
        ValueError: On shape mismatch or non-finite values.
    """
    if predicted.shape != labelled.shape or predicted.dim() != 1:
        raise ValueError(
            f"predicted and labelled must be 1-D of one shape, got {tuple(predicted.shape)} and {tuple(labelled.shape)}"
        )
    p = predicted.detach().to("cpu", torch.float64)
    g = labelled.detach().to("cpu", torch.float64)
    if not (bool(torch.isfinite(p).all()) and bool(torch.isfinite(g).all())):
        raise ValueError("gray vectors contain NaN or inf values")
    keep = (p + g) > 0
    p, g = p[keep], g[keep]
    if p.numel() < 2 or int((p > 0).sum()) == 1 or int((g > 0).sum()) == 1:
        return 0.0
    if bool((p == p[0]).all()) or bool((g == g[0]).all()):
        return 0.0
    rho = float(stats.spearmanr(p.numpy(), g.numpy()).statistic)
    return rho if math.isfinite(rho) else 0.0


def relation_weight(rho: float, beta: float = 0.5) -> float:
    """Relation factor ``w_rel = 1 - ln(1 + beta rho)`` (``Loss_Knowledge``: ``-log(beta rho + 1) + 1``).

    Raises:
        ValueError: If ``rho`` is outside [-1, 1] or ``beta`` is outside [0, 1).
    """
    if not -1.0 <= rho <= 1.0:
        raise ValueError(f"rho must be in [-1, 1], got {rho!r}")
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must be in [0, 1) so that 1 + beta * rho > 0, got {beta!r}")
    return 1.0 - math.log1p(beta * rho)


def reliability_weight(relation: Tensor, present: Tensor, base: float = 0.95, scale: float = 0.1) -> float:
    """Reliability factor ``w_rel2 = base + scale * sum_{i != j in U} |R_ij| / (n^2 - n)``.

    Args:
        relation: ``(K, K)`` relation-stability matrix (:func:`relation_stability_matrix`).
        present: Class indices present in the batch's ground truth (repeats allowed).
        base: 0.95 in the released code.
        scale: 0.1 in the released code.

    Returns:
        The factor; ``1.0`` when fewer than two classes are present (the released code divides
        by ``n^2 - n = 0`` there, and returns 1 for an empty batch; with no class pair there is
        no relation to weigh, so the loss is left unscaled - our definition).
    """
    if relation.dim() != 2 or relation.shape[0] != relation.shape[1]:
        raise ValueError(f"relation must be a square (K, K) matrix, got shape {tuple(relation.shape)}")
    classes = torch.as_tensor(present).reshape(-1).long().unique()
    if classes.numel() and (int(classes.min()) < 0 or int(classes.max()) >= relation.shape[0]):
        raise ValueError(f"present classes must be in [0, {relation.shape[0]}), got {classes.tolist()}")
    n = classes.numel()
    if n < 2:
        return 1.0
    classes = classes.to(relation.device)
    sub = relation[classes[:, None], classes[None, :]].abs().double()
    off_diagonal = float(sub.sum() - sub.diagonal().sum())
    return base + scale * off_diagonal / (n * n - n)


def relation_stability_matrix(samples: Iterable[tuple[Tensor, Tensor, Tensor]], num_classes: int) -> Tensor:
    """Class x class stability of the gray-level order, from a dataset.

    The released code ships ``M3FD_relation.pt`` without the script that made it. Our
    definition: for every image where classes ``i`` and ``j`` both occur, with ``g_c`` the mean
    gray value of class ``c``'s boxes in that image, ``R_ij`` is the mean over those images of
    ``sign(g_i - g_j)``. ``|R_ij| = 1`` when the order of the pair never flips, 0 when it is a
    coin toss or the pair never co-occurs; ``R`` is antisymmetric with a zero diagonal.

    Args:
        samples: ``(gray (H, W), boxes (N, 4) xyxy, labels (N,))`` per image.
        num_classes: ``K``.

    Returns:
        ``(K, K)`` float32 tensor.
    """
    total = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    count = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    for gray, boxes, labels in samples:
        labels = labels.long()
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            raise ValueError(f"labels must be in [0, {num_classes}), got {labels.unique().tolist()}")
        present = labels.unique()
        if present.numel() < 2:
            continue
        means = class_gray_means(gray.float(), boxes.float(), labels, num_classes).double()
        idx = present
        diff = torch.sign(means[idx][:, None] - means[idx][None, :])
        total[idx[:, None], idx[None, :]] += diff
        count[idx[:, None], idx[None, :]] += 1
    relation = torch.where(count > 0, total / count.clamp_min(1), torch.zeros_like(total))
    relation.fill_diagonal_(0.0)
    return relation.float()


def main(argv: Sequence[str] | None = None) -> Path:
    """``python -m robust_lightning.lightning_modules.kgat.knowledge``: R from a COCO dataset."""
    from robust_lightning.datamodules.infrared import CocoDetectionDataset

    parser = argparse.ArgumentParser(description="Compute KGAT's relation-stability matrix R from a COCO dataset.")
    parser.add_argument("--annotations", required=True, help="COCO JSON of the training split")
    parser.add_argument("--images", required=True, help="folder the images' file_name entries are relative to")
    parser.add_argument("--class-names", nargs="+", default=None, help="categories in label order (default: all)")
    parser.add_argument("--out", required=True, help="output .pt file (a plain tensor, loadable with weights_only)")
    args = parser.parse_args(argv)
    dataset = CocoDetectionDataset(args.annotations, args.images, class_names=args.class_names)
    relation = relation_stability_matrix(dataset.iter_gray(), len(dataset.class_names))
    out = Path(args.out)
    if out.exists():
        raise SystemExit(f"--out {out} exists; refusing to overwrite it")
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(relation, os.fspath(out))
    np.set_printoptions(precision=2, suppress=True)
    print(f"classes: {dataset.class_names}\nR =\n{relation.numpy()}\nsaved to {out}")
    return out


if __name__ == "__main__":
    main()
