"""Neural Uncertainty Principle (NUP) probes and ConjMask, in pure torch.

Zhang et al., "Neural Uncertainty Principle: A Unified View of Adversarial Fragility and LLM
Hallucination" (arXiv:2603.19562) treat an input ``x`` and its loss gradient ``g = ∇x L`` as
conjugate observables: a single backward pass gives ``g``, and statistics of the pair signal
fragility (classifiers) or hallucination risk (LLM prefill). ConjMask masks the input components
with the largest input×gradient contribution before classifying.

We had the abstract, not the paper's equations, so the formulas here are **our reading**:

* Per sample, the ``D`` input components (pixels; or prompt-token embedding coordinates of an
  LLM) are the "positions" ``x_i`` and their loss gradients the conjugate "momenta" ``g_i``.
  Over the components (optionally a masked subset ``M``):

  - ``x_spread = std_M(x)``, ``grad_spread = std_M(g)`` and ``spread_product = x_spread *
    grad_spread`` (the uncertainty product);
  - ``covariance = mean_M((x - mean x)(g - mean g))`` and ``correlation = covariance /
    spread_product`` (the input–gradient correlation channel; 0 where a spread is 0). By
    Cauchy–Schwarz ``spread_product >= |covariance|``: the product is bounded below by the
    correlation term, Robertson–Schrödinger style;
  - ``coupling = mean_M |(x - b) ⊙ g|`` (``b`` a baseline, 0 by default): the first-order
    contribution of each component to the loss, ``L(x) - L(b) ≈ Σ (x - b)_i g_i``;
  - ``grad_norm = ||g||_2`` over ``M`` and the ``loss`` itself, for reference.

* ConjMask: ``s = score((x - b) ⊙ g)``, with ``g`` the gradient of the cross-entropy **of the
  model's own predicted label** (no true label exists at test time; training may use the true
  label), ``score = |·|`` (``"abs"``, default) or the signed value (``"positive"``: only
  components that raise the loss). The ``round(fraction * D)`` components with the largest
  score are set to ``b``, which removes exactly their first-order contribution; then the model
  classifies the masked input. The mask is piecewise constant in ``x`` and is detached, so an
  attack's gradient through ConjMask is zero on masked components (gradient masking); the
  ``straight_through`` variant passes the gradient of the masked input straight to ``x``
  (BPDA, Athalye et al. 2018) for evaluation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from typing_extensions import override

from robust_lightning._validation import check_choice, check_probability
from robust_lightning.attacks.core import attack_mode
from robust_lightning.attacks.probes import (
    IGNORE_INDEX,
    LM_LOSSES,
    PROBE_STATISTICS,
    causal_lm_prefill_probe,
    check_baseline,
    input_gradient,
    probe_statistics,
)

__all__ = [
    "IGNORE_INDEX",
    "LM_LOSSES",
    "PROBE_STATISTICS",
    "SCORES",
    "ConjMask",
    "causal_lm_prefill_probe",
    "conj_mask",
    "conj_mask_inputs",
    "input_gradient",
    "probe_statistics",
]

Score = Literal["abs", "positive"]
SCORES: tuple[str, ...] = ("abs", "positive")


def _own_label_loss(classifier: nn.Module, labels: Tensor | None) -> Callable[[Tensor], Tensor]:
    def loss_fn(z: Tensor) -> Tensor:
        logits = classifier(z)
        if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != z.shape[0]:
            shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise ValueError(f"the classifier must return logits (B, C) = ({z.shape[0]}, C), got {shape}")
        target = logits.detach().argmax(1) if labels is None else labels
        return F.cross_entropy(logits.float(), target.long(), reduction="none")

    return loss_fn


def conj_mask(x: Tensor, grad: Tensor, fraction: float, baseline: float = 0.0, score: Score = "abs") -> Tensor:
    """The ConjMask mask: ``True`` on each sample's ``round(fraction * D)`` top-scoring components.

    Args:
        x: Inputs ``(B, ...)``.
        grad: Loss gradient w.r.t. ``x``.
        fraction: Fraction of each sample's components to mask, in ``[0, 1]``.
        baseline: Reference ``b`` of the contribution ``(x - b) ⊙ grad``.
        score: ``"abs"`` ranks by ``|(x - b) ⊙ grad|``, ``"positive"`` by the signed value.

    Returns:
        A detached bool tensor of ``x``'s shape.
    """
    fraction = check_probability("fraction", fraction)
    baseline = check_baseline(baseline)
    check_choice("score", score, SCORES)
    if x.shape != grad.shape or x.dim() < 2:
        raise ValueError(f"x and grad must have the same shape (B, ...), got {tuple(x.shape)} and {tuple(grad.shape)}")
    contribution = ((x.detach() - baseline) * grad.detach()).flatten(1)
    ranking = contribution.abs() if score == "abs" else contribution
    k = round(fraction * ranking.shape[1])
    mask = torch.zeros_like(ranking, dtype=torch.bool)
    if k > 0:
        mask.scatter_(1, ranking.topk(k, dim=1).indices, True)
    return mask.view_as(x)


def conj_mask_inputs(
    classifier: nn.Module,
    x: Tensor,
    fraction: float,
    baseline: float = 0.0,
    score: Score = "abs",
    labels: Tensor | None = None,
    straight_through: bool = False,
) -> Tensor:
    """ConjMask's input transform: ``x`` with its top input×gradient components set to ``baseline``.

    One extra forward/backward of ``classifier`` computes the gradient of the cross-entropy of
    ``labels`` (default: the classifier's own predictions, as at test time). It runs in the
    classifier's current mode with parameters frozen and BatchNorm statistics restored
    (:func:`~robust_lightning.attacks.core.attack_mode`), so it neither trains nor leaks into
    running statistics.

    Args:
        classifier: Maps ``x`` to logits ``(B, C)``.
        x: Inputs ``(B, ...)``; may require grad (inside an attack): the result stays
            differentiable w.r.t. ``x`` on unmasked components.
        fraction: Fraction of components to mask per sample.
        baseline: Value masked components get (and the contribution's reference).
        score: ``"abs"`` or ``"positive"`` (see :func:`conj_mask`).
        labels: Optional ``(B,)`` class labels (training); ``None`` uses the predicted label.
        straight_through: Return ``x + (masked - x).detach()``: the forward value is the masked
            input, the gradient w.r.t. ``x`` is the identity (BPDA evaluation).

    Returns:
        The masked inputs, same shape/dtype as ``x``.
    """
    fraction = check_probability("fraction", fraction)
    if fraction == 0.0:
        return x
    if labels is not None and labels.is_inference():
        with torch.inference_mode(False):
            labels = labels.clone()  # cross-entropy saves its target for backward
    mode = "train" if classifier.training else "eval"
    with attack_mode(classifier, mode):
        _, grad = input_gradient(_own_label_loss(classifier, labels), x)
    mask = conj_mask(x, grad, fraction, baseline, score)
    masked = torch.where(mask, torch.full_like(x, baseline), x)
    if straight_through:
        return x + (masked - x).detach()
    return masked


class ConjMask(nn.Module):
    """Wrap a classifier: mask the top input×gradient components of its input, then classify.

    ``ConjMask(model, fraction=0.1)(x)`` equals ``model(conj_mask_inputs(model, x, 0.1))``. The
    mask uses the model's own predicted label (no true label at test time).

    Args:
        classifier: The wrapped model (inputs -> logits).
        fraction: Fraction of components to mask per sample, in ``[0, 1]``.
        baseline: Value given to masked components (0 = black for images in ``[0, 1]``; with a
            ``Normalize(mean, std)`` inside the model, ``baseline = mean`` is the "zero of the
            normalised input" reading).
        score: ``"abs"`` (default) or ``"positive"``.
        straight_through: BPDA gradient (evaluation only; forward values are unchanged).
    """

    def __init__(
        self,
        classifier: nn.Module,
        fraction: float = 0.1,
        baseline: float = 0.0,
        score: Score = "abs",
        straight_through: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(classifier, nn.Module):
            raise TypeError(f"classifier must be an nn.Module, got {type(classifier).__name__}")
        self.classifier = classifier
        self.fraction = check_probability("fraction", fraction)
        self.baseline = check_baseline(baseline)
        self.score = check_choice("score", score, SCORES)
        self.straight_through = bool(straight_through)

    def mask_inputs(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """The masked input the classifier sees (``labels=None``: predicted labels)."""
        return conj_mask_inputs(self.classifier, x, self.fraction, self.baseline, self.score, labels,
                                self.straight_through)

    @override
    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.mask_inputs(x))

    @override
    def extra_repr(self) -> str:
        return (f"fraction={self.fraction}, baseline={self.baseline}, score={self.score!r}, "
                f"straight_through={self.straight_through}")
