"""Input-gradient probes: statistics of an input and its loss gradient from one backward pass.

The Neural Uncertainty Principle reading (Zhang et al., arXiv:2603.19562) treats an input ``x``
and its loss gradient ``g = ∇x L`` as conjugate observables; statistics of the pair signal
fragility (classifiers) or hallucination risk (LLM prefill). The formulas are our reading of the
paper's abstract and are spelled out in
:mod:`robust_lightning.lightning_modules.nup.model`, whose ConjMask defence builds on them.
They live with the attacks because, like an attack, a probe differentiates a loss with respect
to the input only; :class:`~robust_lightning.callbacks.ConjugateProbe` and the NUP method both
import them from here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robust_lightning._validation import check_number
from robust_lightning.attacks.core import attack_mode

__all__ = [
    "IGNORE_INDEX",
    "LM_LOSSES",
    "PROBE_STATISTICS",
    "causal_lm_prefill_probe",
    "check_baseline",
    "input_gradient",
    "probe_statistics",
]

LmLoss = Literal["next_token", "prompt"]
LM_LOSSES: tuple[str, ...] = ("next_token", "prompt")
PROBE_STATISTICS: tuple[str, ...] = (
    "x_spread", "grad_spread", "spread_product", "covariance", "correlation", "coupling", "grad_norm",
)
IGNORE_INDEX = -100
# Below this a spread counts as zero: the correlation of a constant signal is undefined, and 0
# (no linear coupling) is what it is reported as.
_SPREAD_FLOOR = 1e-30


def check_baseline(baseline: Any) -> float:
    """``baseline`` as a float, or :class:`ValueError` naming it when it is not a finite number."""
    return check_number("baseline", baseline)


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
    baseline = check_baseline(baseline)
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
