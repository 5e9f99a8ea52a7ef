"""Training steps of RobustClassifier's cheap recipes that share passes with the update.

Free-AT and GradAlign cannot run as "attack, then train" through the
:class:`~robust_lightning.callbacks.AdversarialTraining` callback without losing what makes them
cheap or correct: Free-AT takes the perturbation's gradient from the *same* backward pass that
updates the parameters, and GradAlign's regulariser reuses the FGSM gradient and must be
differentiated through. Their steps live here; FAT's early-stopped PGD is an ordinary attack
(:class:`~robust_lightning.attacks.fast.EarlyStoppedPGD`) run by the callback.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor

from robust_lightning.attacks.core import attack_mode
from robust_lightning.attacks.fast import (
    free_at_update,
    gradient_alignment_penalty,
    input_gradient,
)
from robust_lightning.errors import InvalidArgumentError

__all__ = ["FreeATPerturbation", "free_at_step", "grad_align_step", "step_schedulers"]


class FreeATPerturbation:
    """The perturbation Free-AT carries across replays *and* minibatches.

    ``free_train.py`` of ashafahi/free_adv_train keeps one ``(batch, ...)`` perturbation
    variable, zero-initialised once and never reset. Our reading for batches of another size
    (the last, smaller batch of an epoch; a change of input shape): a smaller batch uses the
    first rows, a larger one or a new shape starts from zeros. It is not checkpointed: a resumed
    run restarts it from zero.
    """

    def __init__(self) -> None:
        self.delta: Tensor | None = None

    def for_inputs(self, x: Tensor) -> Tensor:
        stored = self.delta
        if (stored is None or stored.shape[1:] != x.shape[1:] or stored.shape[0] < x.shape[0]
                or stored.device != x.device or stored.dtype != x.dtype):
            return torch.zeros_like(x)
        return stored[: x.shape[0]].clone()

    def store(self, delta: Tensor) -> None:
        delta = delta.detach()
        if self.delta is not None and self.delta.shape[1:] == delta.shape[1:] and \
                self.delta.shape[0] > delta.shape[0] and self.delta.device == delta.device:
            # Keep the rows a smaller (last) batch did not use for the next full batch.
            merged = self.delta.clone()
            merged[: delta.shape[0]] = delta
            delta = merged
        self.delta = delta


def free_at_step(
    module: pl.LightningModule,
    x: Tensor,
    y: Tensor,
    perturbation: FreeATPerturbation,
    replays: int,
    eps: float,
    bounds: tuple[float, float],
    on_update: Callable[[], None] | None = None,
) -> tuple[Tensor, Tensor]:
    """``replays`` Free-AT updates on one minibatch (Shafahi et al. 2019, Alg. 1).

    Each replay runs one forward and one backward pass on ``clip(x + delta)``; that backward
    gives both the parameter gradients (the optimizer step) and ``delta``'s gradient (the
    perturbation step), computed at the same ``delta``, as in ``free_train.py``. Requires
    manual optimization; ``on_update`` runs after every optimizer step (per-step schedulers).

    Returns:
        The last replay's loss and logits (detached), for logging.
    """
    optimizer = module.optimizers()
    if isinstance(optimizer, list):
        if len(optimizer) != 1:
            raise InvalidArgumentError(f"recipe 'free_at' trains with one optimizer, got {len(optimizer)}")
        optimizer = optimizer[0]
    lo, hi = bounds
    delta = perturbation.for_inputs(x)
    loss = logits = None
    for _ in range(replays):
        delta.requires_grad_(True)
        logits = module(torch.clamp(x + delta, lo, hi))
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad()
        module.manual_backward(loss)
        grad = delta.grad
        if grad is None:  # the model ignored its input
            raise RuntimeError("free_at: the loss does not depend on the perturbed inputs")
        optimizer.step()
        if on_update is not None:
            on_update()
        # Under mixed precision the gradient is loss-scaled; only its sign is used.
        delta = free_at_update(delta.detach(), grad, eps)
    perturbation.store(delta)
    assert loss is not None and logits is not None  # replays >= 1 is checked by the module
    return loss.detach(), logits.detach()


def grad_align_step(
    module: pl.LightningModule,
    x: Tensor,
    y: Tensor,
    eps: float,
    alpha: float,
    grad_align_lambda: float,
    attack_model_mode: Literal["eval", "train"],
    bounds: tuple[float, float],
    generator: torch.Generator | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """FGSM + GradAlign (Andriushchenko & Flammarion 2020), as in their ``train.py``.

    Their GradAlign runs (``sh/exps_diff_eps_cifar10.sh``: ``--attack=fgsm --attack_init=zero``)
    take the FGSM gradient at ``x`` itself, step ``clip(alpha * sign(g), -eps, eps)`` (their
    ``fgsm_alpha=1.25`` clipped to the ball, i.e. ``eps * sign(g)``), train on the result and add
    ``lambda * (1 - cos(g, grad at x + eta))``. Passes: one forward/backward for ``g`` (weights
    frozen), one forward plus a double backward for the regulariser, one forward/backward for
    the update. Both gradients are taken in ``attack_model_mode``: ``"train"`` (their code's
    mode) uses batch statistics and lets the penalty's forward update the BatchNorm running
    statistics like the training forward; ``"eval"`` uses the running statistics and leaves
    them untouched.

    Returns:
        ``(loss, logits on the FGSM inputs, regulariser before lambda)``.
    """
    lo, hi = bounds

    def per_sample_loss(z: Tensor) -> Tensor:
        return F.cross_entropy(module(z).float(), y, reduction="none")

    with attack_mode(module, attack_model_mode):
        grad = input_gradient(per_sample_loss, x)
    x_adv = torch.clamp(x + torch.clamp(alpha * grad.sign(), -eps, eps), lo, hi).detach()
    logits = module(x_adv)
    loss = F.cross_entropy(logits, y)
    regulariser = torch.zeros((), device=x.device)
    if grad_align_lambda > 0:
        # In train mode the penalty's forward runs as the training forward does, BatchNorm
        # statistics included (as in their train.py): restoring the statistics in place, as
        # attack_mode("train") does, would invalidate the graph the double backward needs.
        context = (attack_mode(module, "eval", freeze_params=False) if attack_model_mode == "eval"
                   else contextlib.nullcontext())
        with context:
            regulariser = gradient_alignment_penalty(per_sample_loss, x, eps, grad_at_x=grad,
                                                     generator=generator)
        loss = loss + grad_align_lambda * regulariser
    return loss, logits, regulariser.detach()


def step_schedulers(module: pl.LightningModule, interval: str, when: str) -> None:
    """Step the module's schedulers under manual optimization when ``interval == when``.

    Lightning steps schedulers itself only under automatic optimization.
    """
    if interval != when:
        return
    schedulers: Any = module.lr_schedulers()
    if schedulers is None:
        return
    for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            raise InvalidArgumentError(
                "lr_scheduler: ReduceLROnPlateau needs a monitored metric, which the manual "
                "optimization of recipe 'free_at' does not pass; use a step/epoch schedule")
        scheduler.step()
