"""ConjMaskClassifier: a RobustClassifier whose inputs pass through ConjMask.

ConjMask (Zhang et al., "Neural Uncertainty Principle", arXiv:2603.19562) masks the input
components with the largest input×gradient contribution before classifying; our reading of it
is in :mod:`robust_lightning.lightning_modules.nup.model`.

* Training (``mask_train``): every training step masks its inputs first, using the true label
  (``train_label="target"``) or the prediction (``"predicted"``), so the model learns on what it
  will see at test time.
* Evaluation (``mask_eval``): ``forward`` in eval mode masks with the **predicted** label (no true
  label exists at test time), so ``val/acc``, ``test/acc``, predictions and every attack of
  :class:`~robust_lightning.callbacks.RobustnessEvaluation` go through the masked model. The mask
  is detached, so white-box attacks see zero gradient on masked components (gradient masking);
  ``straight_through=True`` gives them the BPDA gradient instead (evaluation only). Report
  transfer attacks too (``robust_lightning.attacks.transfer``; ``benchmarks/nup_digits.py``).

Everything else (recipes, optimizer, metrics, protocol) is :class:`RobustClassifier`'s; an
adversarial recipe crafts its training attack through the masked eval-mode forward and then the
training step masks the adversarial inputs.
"""

from __future__ import annotations

from typing import Any, Literal

from torch import Tensor, nn
from typing_extensions import override

from robust_lightning._validation import check_bool, check_choice, check_probability
from robust_lightning.attacks.probes import check_baseline
from robust_lightning.lightning_modules.classifier import RobustClassifier
from robust_lightning.lightning_modules.nup.model import (
    SCORES,
    Score,
    conj_mask_inputs,
)
from robust_lightning.protocol import default_with_adversarial_inputs, split_batch

__all__ = ["TRAIN_LABELS", "ConjMaskClassifier"]

TRAIN_LABELS: tuple[str, ...] = ("target", "predicted")


class ConjMaskClassifier(RobustClassifier):
    """An image classifier with ConjMask in front of it, at training and/or at evaluation.

    Args:
        backbone: ``nn.Module`` mapping normalised images to logits (e.g. ``SmallCNN``).
        mask_fraction: Fraction of input components ConjMask masks per sample, in ``[0, 1]``.
        mask_baseline: Value given to masked components, in input units (images in ``[0, 1]``:
            0 is black; ``mask_baseline = mean`` masks to the zero of the normalised input).
        mask_score: ``"abs"`` (largest ``|(x - b) ⊙ ∇x L|``) or ``"positive"`` (largest signed).
        mask_train: Mask the inputs of every training step.
        mask_eval: Mask in eval-mode forward passes (validation, test, predict, attacks).
        train_label: Label of the training mask's loss, ``"target"`` or ``"predicted"``.
        straight_through: Straight-through (BPDA) gradient through the mask, for evaluation.
        **kwargs: Every other :class:`~robust_lightning.RobustClassifier` argument
            (``num_classes``, ``mean``, ``std``, ``recipe``, ``eps``, ``alpha``, ``steps``,
            ``norm``, ``trades_beta``, ``attack_model_mode``, ``optimizer``, ``lr_scheduler``,
            ``scheduler_interval``), passed through unchanged.

    Raises:
        ValueError: On an out-of-range argument (the message names it).
    """

    def __init__(
        self,
        backbone: nn.Module,
        mask_fraction: float = 0.1,
        mask_baseline: float = 0.0,
        mask_score: Score = "abs",
        mask_train: bool = True,
        mask_eval: bool = True,
        train_label: Literal["target", "predicted"] = "target",
        straight_through: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(backbone=backbone, **kwargs)
        self.train_label = check_choice("train_label", train_label, TRAIN_LABELS)
        self.mask_fraction = check_probability("mask_fraction", mask_fraction)
        self.mask_baseline = check_baseline(mask_baseline)
        self.mask_score = check_choice("mask_score", mask_score, SCORES)
        self.mask_train = check_bool("mask_train", mask_train)
        self.mask_eval = check_bool("mask_eval", mask_eval)
        self.straight_through = check_bool("straight_through", straight_through)

    def mask_inputs(self, x: Tensor, labels: Tensor | None = None, straight_through: bool = False) -> Tensor:
        """``x`` after ConjMask on this module's network (``labels=None``: predicted labels)."""
        return conj_mask_inputs(self.model, x, self.mask_fraction, self.mask_baseline, self.mask_score,
                                labels=labels, straight_through=straight_through)

    @override
    def forward(self, x: Tensor) -> Tensor:
        if self.mask_eval and not self.training:
            x = self.mask_inputs(x, straight_through=self.straight_through)
        return super().forward(x)

    @override
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        if self.mask_train and self.mask_fraction > 0:
            x, y = split_batch(batch)
            masked = self.mask_inputs(x, labels=y if self.train_label == "target" else None)
            # Plain replacement of the inputs (TRADES' [x, y, x_adv] keeps its x_adv).
            batch = default_with_adversarial_inputs(self, batch, masked)
        return super().training_step(batch, batch_idx)
