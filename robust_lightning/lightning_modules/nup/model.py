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
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robust_lightning._validation import check_number, check_probability
from robust_lightning.attacks.core import attack_mode

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
LmLoss = Literal["next_token", "prompt"]
LM_LOSSES: tuple[str, ...] = ("next_token", "prompt")
PROBE_STATISTICS: tuple[str, ...] = (
    "x_spread", "grad_spread", "spread_product", "covariance", "correlation", "coupling", "grad_norm",
)
IGNORE_INDEX = -100
# Below this a spread counts as zero: the correlation of a constant signal is undefined, and 0
# (no linear coupling) is what it is reported as.
_SPREAD_FLOOR = 1e-30


def _check_fraction(fraction: Any) -> float:
    return check_probability("fraction", fraction)


def _check_baseline(baseline: Any) -> float:
    return check_number("baseline", baseline)


def _check_score(score: Any) -> str:
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    return score


def probe_statistics(
    x: Tensor, grad: Tensor, mask: Tensor | None = None, baseline: float = 0.0
) -> dict[str, Tensor]:
    """Per-sample input–gradient statistics over the components of each sample.

    Args:
        x: Inputs ``(B, ...)``.
        grad: Loss gradient w.r.t. ``x``, same shape.
        mask: Optional bool tensor of ``x``'s shape (or broadcastable to it) selecting the
            components that count (e.g. prompt tokens of a padded batch); every sample needs at
            least one.
        baseline: ``b`` in ``coupling = mean |(x - b) ⊙ g|`` (the reference input).

    Returns:
        ``{name: (B,) float tensor}`` for each name in :data:`PROBE_STATISTICS`, detached.

    Raises:
        ValueError: On mismatched shapes or a sample with no selected component.
    """
    if not isinstance(x, Tensor) or not isinstance(grad, Tensor):
        raise TypeError("x and grad must be tensors")
    if x.shape != grad.shape or x.dim() < 2:
        raise ValueError(f"x and grad must have the same shape (B, ...), got {tuple(x.shape)} and {tuple(grad.shape)}")
    baseline = _check_baseline(baseline)
    opmath = torch.float64 if x.dtype == torch.float64 else torch.float32
    xs = x.detach().to(opmath).flatten(1)
    gs = grad.detach().to(opmath).flatten(1)
    if mask is None:
        weights = torch.ones_like(xs)
    else:
        if mask.dtype != torch.bool:
            raise ValueError(f"mask must be a bool tensor, got {mask.dtype}")
        weights = mask.expand_as(x).flatten(1).to(opmath)
    counts = weights.sum(1)
    if bool((counts == 0).any()):
        raise ValueError("mask selects no component for some sample; every sample needs at least one")
    mean = lambda t: (t * weights).sum(1) / counts  # masked mean over components
    x_centred = xs - mean(xs)[:, None]
    g_centred = gs - mean(gs)[:, None]
    x_spread = mean(x_centred.square()).sqrt()
    grad_spread = mean(g_centred.square()).sqrt()
    spread_product = x_spread * grad_spread
    covariance = mean(x_centred * g_centred)
    correlation = torch.where(spread_product > _SPREAD_FLOOR, covariance / spread_product.clamp_min(_SPREAD_FLOOR),
                              torch.zeros_like(covariance))
    return {
        "x_spread": x_spread,
        "grad_spread": grad_spread,
        "spread_product": spread_product,
        "covariance": covariance,
        "correlation": correlation.clamp(-1.0, 1.0),
        "coupling": mean(((xs - baseline) * gs).abs()),
        "grad_norm": (gs.square() * weights).sum(1).sqrt(),
    }


def input_gradient(loss_fn: Callable[[Tensor], Tensor], x: Tensor) -> tuple[Tensor, Tensor]:
    """One backward pass: the per-sample loss and its gradient w.r.t. the input only.

    Works under ``torch.inference_mode`` (Lightning validation/test) by leaving it for a clone
    of ``x``; parameter gradients are never accumulated (``torch.autograd.grad``).

    Args:
        loss_fn: Maps ``(B, ...)`` inputs to a ``(B,)`` loss.
        x: Inputs, floating point.

    Returns:
        ``(loss, grad)``, both detached; ``grad`` has ``x``'s shape.

    Raises:
        ValueError: If the loss is not ``(B,)`` or does not depend on ``x``.
    """
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    with torch.inference_mode(False), torch.enable_grad():
        leaf = x.detach().clone() if x.is_inference() else x.detach()
        leaf.requires_grad_(True)
        loss = loss_fn(leaf)
        if not isinstance(loss, Tensor) or loss.shape != (x.shape[0],):
            shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
            raise ValueError(f"loss_fn must return a per-sample loss of shape ({x.shape[0]},), got {shape}")
        grad = torch.autograd.grad(loss.sum(), leaf, allow_unused=True)[0] if loss.requires_grad else None
    if grad is None:
        raise ValueError("loss_fn returned a loss that does not depend on its input (no gradient)")
    return loss.detach(), grad.detach()


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
    fraction = _check_fraction(fraction)
    baseline = _check_baseline(baseline)
    _check_score(score)
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
    fraction = _check_fraction(fraction)
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
        self.fraction = _check_fraction(fraction)
        self.baseline = _check_baseline(baseline)
        self.score = _check_score(score)
        self.straight_through = bool(straight_through)

    def mask_inputs(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """The masked input the classifier sees (``labels=None``: predicted labels)."""
        return conj_mask_inputs(self.classifier, x, self.fraction, self.baseline, self.score, labels,
                                self.straight_through)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.mask_inputs(x))

    def extra_repr(self) -> str:
        return (f"fraction={self.fraction}, baseline={self.baseline}, score={self.score!r}, "
                f"straight_through={self.straight_through}")


# -- HF causal LMs: the probe on prompt embeddings at prefill ------------------------------------
def _ordinary(tensor: Tensor) -> Tensor:
    return tensor.clone() if tensor.is_inference() else tensor


def _last_true_index(mask: Tensor) -> Tensor:
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return torch.where(mask, positions, torch.full_like(positions, -1)).max(1).values


def causal_lm_prefill_probe(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    prompt_mask: Tensor | None = None,
    lm_loss: LmLoss = "next_token",
    mode: Literal["eval", "train"] = "eval",
) -> tuple[dict[str, Tensor], Tensor]:
    """The NUP probe of an HF causal LM on its prompt embeddings, before any answer token.

    One forward with ``inputs_embeds = E[input_ids]`` (detached, the probe's ``x``) and one
    backward of a per-sample prefill loss give ``g = ∇_embeds L``; :func:`probe_statistics` is
    taken over the ``(prompt tokens × hidden)`` components. Our reading of "prefill-stage loss"
    (``lm_loss``):

    * ``"next_token"`` (default): cross-entropy of the model's own greedy next token after the
      prompt (the classifier's predicted-label loss, one step ahead);
    * ``"prompt"``: the mean next-token cross-entropy of the prompt's own tokens (teacher forced;
      needs at least two prompt tokens per sample).

    Parameters are frozen for the probe and every module's mode is restored afterwards
    (:func:`~robust_lightning.attacks.core.attack_mode`).

    Args:
        model: An HF causal LM (``get_input_embeddings()``, accepts ``inputs_embeds``, returns
            ``.logits``).
        input_ids: ``(B, T)`` token ids.
        attention_mask: ``(B, T)`` 1 on real tokens (``None``: all real).
        prompt_mask: ``(B, T)`` bool, the prompt positions (``None``: every real token).
        lm_loss: ``"next_token"`` or ``"prompt"``.
        mode: ``"eval"`` (dropout off, the default) or ``"train"`` while probing.

    Returns:
        ``(statistics, loss)``: the per-sample statistics and the ``(B,)`` prefill loss.

    Raises:
        ValueError: On bad shapes, an empty prompt or an unknown ``lm_loss``.
    """
    if lm_loss not in LM_LOSSES:
        raise ValueError(f"lm_loss must be one of {LM_LOSSES}, got {lm_loss!r}")
    get_embeddings = getattr(model, "get_input_embeddings", None)
    if not callable(get_embeddings):
        raise TypeError(f"model must be an HF causal LM with get_input_embeddings(), got {type(model).__name__}")
    if not isinstance(input_ids, Tensor) or input_ids.dim() != 2 or input_ids.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"input_ids must be a (B, T) integer tensor, got {getattr(input_ids, 'shape', input_ids)!r}")
    for name, value in (("attention_mask", attention_mask), ("prompt_mask", prompt_mask)):
        if value is not None and (not isinstance(value, Tensor) or value.shape != input_ids.shape):
            raise ValueError(f"{name} must be a tensor of input_ids' shape {tuple(input_ids.shape)}, "
                             f"got {getattr(value, 'shape', value)!r}")
    # Lightning validates under inference_mode; tensors saved for backward (indices, targets)
    # must be ordinary ones, so everything is built outside it from clones.
    with torch.inference_mode(False):
        ids = _ordinary(input_ids)
        attention = None if attention_mask is None else _ordinary(attention_mask)
        real = torch.ones_like(ids, dtype=torch.bool) if attention is None else attention.bool()
        prompt = real if prompt_mask is None else _ordinary(prompt_mask).bool() & real
        if bool((prompt.sum(1) == 0).any()):
            raise ValueError("some sample has no prompt token (check attention_mask / prompt_mask)")
        if lm_loss == "prompt" and bool((prompt.sum(1) < 2).any()):
            raise ValueError("lm_loss='prompt' needs at least two prompt tokens per sample; use 'next_token'")
        last = _last_true_index(prompt)
        rows = torch.arange(ids.shape[0], device=ids.device)
        pairs = prompt[:, :-1] & prompt[:, 1:]
        targets = ids[:, 1:].masked_fill(~pairs, IGNORE_INDEX)

        def loss_fn(embeds: Tensor) -> Tensor:
            logits = model(inputs_embeds=embeds, attention_mask=attention).logits.float()
            if lm_loss == "next_token":
                step = logits[rows, last]
                return F.cross_entropy(step, step.detach().argmax(1), reduction="none")
            token = F.cross_entropy(logits[:, :-1].transpose(1, 2), targets, ignore_index=IGNORE_INDEX,
                                    reduction="none")
            return token.sum(1) / pairs.sum(1)

        with attack_mode(model, mode):
            embeds = get_embeddings()(ids).detach()
            loss, grad = input_gradient(loss_fn, embeds)
        return probe_statistics(embeds, grad, mask=prompt[..., None]), loss
