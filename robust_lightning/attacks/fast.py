"""Attack pieces of the cheap adversarial-training recipes: early-stopped PGD, GradAlign, Free-AT.

* :class:`EarlyStoppedPGD`: Zhang et al. 2020, "Attacks which do not kill training make
  adversarial learning stronger" (FAT), Alg. 1. PGD stops per sample once it is misclassified,
  after ``tau`` further steps; samples that stopped leave the batch, so later steps run on
  fewer samples (fewer and smaller passes than PGD-K).
* :func:`gradient_alignment_penalty`: Andriushchenko & Flammarion 2020, "Understanding and
  Improving Fast Adversarial Training", Eq. (6):
  ``E[1 - cos(grad_x l(x, y), grad_x l(x + eta, y))]`` with ``eta ~ U([-eps, eps]^d)``.
* :func:`free_at_update`: Shafahi et al. 2019, "Adversarial Training for Free!", Alg. 1: the
  carried perturbation moves by ``eps * sign(grad)`` and is clipped to the ball.

The readings of the authors' code that these follow are cited where they are used.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from typing_extensions import override

from robust_lightning._validation import check_int, check_non_negative
from robust_lightning.attacks.base import Attack
from robust_lightning.attacks.core import Bounds, LossFn, _check_bounds, parse_budget
from robust_lightning.errors import InvalidArgumentError

__all__ = [
    "FAT_STEP_RATIO",
    "EarlyStoppedPGD",
    "fat_dynamic_tau",
    "free_at_update",
    "gradient_alignment_penalty",
    "input_gradient",
]

LogitsFn = Callable[[Tensor], Tensor]

# zjfheart/Friendly-Adversarial-Training, FAT.py defaults: epsilon 0.031, step size 0.007, so the
# step is 0.007 / 0.031 of the radius; other radii keep that ratio (our reading).
FAT_STEP_RATIO = 0.007 / 0.031


def fat_dynamic_tau(epoch: int, max_epochs: int) -> int:
    """FAT's dynamic tau (FAT.py ``adjust_tau``): 0 up to epoch 50, 1 up to 90, then 2, of 120.

    The authors' schedule is for 120 epochs; other lengths keep the fractions 50/120 and 90/120
    (our reading). ``epoch`` is 0-based (Lightning's ``current_epoch``); FAT.py counts from 1.
    """
    if max_epochs <= 0:
        return 0
    progress = (epoch + 1) / max_epochs
    if progress <= 50 / 120:
        return 0
    if progress <= 90 / 120:
        return 1
    return 2


class EarlyStoppedPGD(Attack):
    """Early-stopped PGD (FAT, Zhang et al. 2020, Alg. 1), L-inf.

    Follows ``earlystop.py`` of zjfheart/Friendly-Adversarial-Training: uniform start in the
    ball; at each of at most ``steps`` iterations every still-running sample is evaluated; a
    misclassified sample with no budget left stops *at that iterate*, one with budget left
    spends one unit of ``tau`` and continues; the others take the step
    ``x + alpha * sign(grad) + omega * N(0, I)``, projected onto the ball and the bounds.
    Stopped samples leave the batch, so each step's forward/backward runs only on the samples
    still running. Unlike the reference, the output keeps the input order (the reference
    concatenates stopped samples first and returns the reordered targets).

    Needs class logits and targets (``requires_logits``): the callbacks call
    :meth:`perturb_logits`. With ``AttackEngine(compile=True)`` each distinct number of running
    samples is a new input shape, so dynamo compiles per shape up to its cache limit; FAT is
    better run uncompiled.

    Args:
        eps: L-inf radius.
        alpha: step size; ``None`` uses FAT's ratio ``0.007 / 0.031`` of ``eps``.
        steps: the maximum number of steps ``K`` (10 in FAT.py).
        tau: extra steps a sample takes after it is first misclassified (0 in FAT.py; the
            recipe can change it per epoch with :func:`fat_dynamic_tau`).
        omega: std of the Gaussian noise added at each step (FAT.py ``omega=0.001``).
        random_start: uniform start in the ball (FAT.py ``uniform_randominit``).
        bounds: valid input range.
        name: metric name override.

    Attributes:
        last_gradient_count: number of per-sample gradient evaluations of the last call (the
            reference's ``count``); PGD-K would use ``K * batch``.
    """

    requires_logits = True

    def __init__(
        self,
        eps: float | str = "8/255",
        alpha: float | str | None = None,
        steps: int = 10,
        tau: int = 0,
        omega: float = 0.001,
        random_start: bool = True,
        bounds: Bounds = (0.0, 1.0),
        name: str | None = None,
    ) -> None:
        super().__init__(eps=eps, norm="linf", bounds=bounds, name=name)
        self.alpha = self.eps * FAT_STEP_RATIO if alpha is None else parse_budget(alpha, "alpha")
        if self.alpha <= 0:
            raise InvalidArgumentError(f"alpha must be > 0, got {alpha!r}")
        self.steps = check_int("steps", steps, minimum=0)
        self.tau = check_int("tau", tau, minimum=0)
        self.omega = check_non_negative("omega", omega)
        self.random_start = bool(random_start)
        self.last_gradient_count = 0

    @override
    @property
    def kind(self) -> str:  # type: ignore[override]
        return f"es_pgd{self.steps}"

    def __call__(self, loss_fn: LossFn, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        raise TypeError("EarlyStoppedPGD stops on misclassification and needs class logits: call "
                        "perturb_logits(logits_fn, x, target), as the robust_lightning callbacks do")

    def perturb_logits(
        self, logits_fn: LogitsFn, x: Tensor, target: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """Friendly adversarial inputs for ``x`` (same order), stopping per sample."""
        lo, hi = _check_bounds(self.bounds)
        with torch.inference_mode(False), torch.enable_grad():
            x = x.detach().clone() if x.is_inference() else x.detach()
            target = target.clone() if target.is_inference() else target
            x_adv = x.clone()
            if self.random_start and self.eps > 0:
                noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
                x_adv = (x + (2 * noise - 1) * self.eps).clamp(lo, hi)
            running = torch.arange(x.shape[0], device=x.device)
            budget = torch.full((x.shape[0],), self.tau, device=x.device, dtype=torch.long)
            self.last_gradient_count = 0
            for _ in range(self.steps):
                if running.numel() == 0:
                    break
                point = x_adv[running].requires_grad_(True)
                logits = logits_fn(point)
                wrong = logits.detach().argmax(dim=1) != target[running]
                stop = wrong & (budget[running] == 0)
                budget[running[wrong & ~stop]] -= 1
                keep = ~stop
                if not bool(keep.any()):
                    break
                # Only the continuing samples' gradients are used; their sum keeps them
                # independent of each other (the reference's batch mean only rescales).
                loss = F.cross_entropy(logits[keep].float(), target[running[keep]], reduction="sum")
                (grad,) = torch.autograd.grad(loss, point)
                moving = running[keep]
                step = self.alpha * grad[keep].sign()
                if self.omega > 0:
                    step = step + self.omega * torch.randn(step.shape, generator=generator,
                                                           device=x.device, dtype=x.dtype)
                clean = x[moving]
                updated = torch.minimum(torch.maximum(x_adv[moving] + step, clean - self.eps),
                                        clean + self.eps).clamp(lo, hi)
                x_adv[moving] = updated.to(x_adv.dtype)
                self.last_gradient_count += int(moving.numel())
                running = moving
            return x_adv.detach()


def input_gradient(loss_fn: LossFn, x: Tensor, create_graph: bool = False) -> Tensor:
    """``d sum(loss_fn(x)) / dx``; with ``create_graph`` the gradient is differentiable."""
    with torch.inference_mode(False), torch.enable_grad():
        point = x.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(loss_fn(point).sum(), point, create_graph=create_graph)
    return grad


def gradient_alignment_penalty(
    loss_fn: LossFn,
    x: Tensor,
    eps: float,
    grad_at_x: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """GradAlign's regulariser (Andriushchenko & Flammarion 2020, Eq. 6), before ``lambda``.

    ``1 - mean_i cos(g_i(x), g_i(x + eta_i))`` with ``eta ~ U([-eps, eps]^d)``, following
    ``train.py`` of tml-epfl/understanding-fast-adv-training: the gradient at ``x`` is the FGSM
    gradient and is detached; the gradient at ``x + eta`` is taken with ``create_graph=True``
    (``utils.get_input_grad(..., delta_init='random_uniform', backprop=True)``), so the
    penalty's gradient reaches the parameters through it; ``x + eta`` is not clamped to the
    bounds (as there); samples where either gradient is zero are left out of the mean.

    Args:
        loss_fn: per-sample loss ``(B,)`` of the model being trained (parameters not frozen).
        x: clean batch.
        eps: L-inf radius of the noise.
        grad_at_x: the input gradient at ``x`` if already computed (the FGSM step's).
        generator: source of ``eta``.

    Returns:
        A scalar tensor, 0 when every gradient pair is aligned (e.g. a loss linear in ``x``).
    """
    if grad_at_x is None:
        grad_at_x = input_gradient(loss_fn, x)
    grad_at_x = grad_at_x.detach()
    with torch.inference_mode(False), torch.enable_grad():
        noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        eta = ((2 * noise - 1) * eps).requires_grad_(True)
        loss = loss_fn(x.detach() + eta).sum()
        (grad_at_eta,) = torch.autograd.grad(loss, eta, create_graph=True)
        g1, g2 = grad_at_x.flatten(1).float(), grad_at_eta.flatten(1).float()
        nonzero = (g1.norm(dim=1) != 0) & (g2.norm(dim=1) != 0)
        if not bool(nonzero.any()):
            return g2.sum() * 0.0
        cos = F.cosine_similarity(g1[nonzero], g2[nonzero], dim=1, eps=0.0)
        return 1.0 - cos.mean()


def free_at_update(delta: Tensor, grad: Tensor, eps: float) -> Tensor:
    """Free-AT's perturbation update (Shafahi et al. 2019, Alg. 1, ``free_train.py``):
    ``clip(delta + eps * sign(grad), -eps, eps)``.
    """
    return (delta + eps * grad.sign()).clamp(-eps, eps)
