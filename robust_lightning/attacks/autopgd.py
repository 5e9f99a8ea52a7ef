"""APGD-CE / APGD-DLR (and the targeted DLR variant) of Croce & Hein 2020.

"Reliable evaluation of adversarial robustness with an ensemble of diverse parameter-free
attacks" (ICML 2020), Algorithm 1, following the reference implementation in
fra31/auto-attack (``autoattack/autopgd_base.py``), from which we take:

* checkpoints ``w_j = ceil(p_j N)`` with ``p_0 = 0, p_1 = 0.22, p_{j+1} = p_j +
  max(p_j - p_{j-1} - 0.03, 0.06)`` (Sec. 3.2), realised as a shrinking period
  ``k <- max(k - 0.03 N, 0.06 N)`` starting at ``0.22 N``;
* initial step ``eta = 2 eps``; the momentum update (Eq. 3)
  ``x_{k+1} = P(x_k + alpha (z_{k+1} - x_k) + (1 - alpha)(x_k - x_{k-1}))`` with alpha = 0.75
  (1.0 at the first iteration);
* at a checkpoint the step size of a sample is halved and it restarts from its best point when
  (Condition 1) fewer than ``rho = 0.75`` of the steps since the last checkpoint increased its
  loss, or (Condition 2) its step was not reduced at the last checkpoint and its best loss did not
  improve since then;
* the random start scaled so its largest coordinate is eps (L-inf) or its norm is eps (L2);
* the DLR loss (Eq. 6) and its targeted version with the top-9 other classes as targets.

The per-sample, per-iteration step sizes and the momentum term make APGD's update differ from
the fixed-step PGD update, so it is written here in PyTorch rather than through ``ops``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from typing_extensions import override

from robust_lightning._validation import check_bool, check_int
from robust_lightning.attacks.base import Attack
from robust_lightning.attacks.core import (
    Bounds,
    LossFn,
    Norm,
    _broadcast,
    _check_bounds,
    _check_eps,
    _check_inputs,
    _evaluate_loss,
)
from robust_lightning.ops import L2_NORM_FLOOR

__all__ = ["APGD", "apgd", "dlr_loss", "targeted_dlr_loss"]

ApgdLoss = Literal["ce", "dlr", "dlr_targeted"]
# An objective returns the per-sample loss and, when it can tell, which samples are already
# misclassified (adversarial); the classification objectives compute both from one forward.
# ``index`` is ``None`` (the whole batch) or the batch positions ``point`` holds, so objectives
# that know per-sample targets can follow a run that only still works on some samples.
Objective = Callable[[Tensor, Tensor | None], tuple[Tensor, Tensor | None]]

MOMENTUM = 0.75
RHO = 0.75


def dlr_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Difference of Logits Ratio, Croce & Hein 2020, Eq. (6); > 0 iff misclassified."""
    if logits.shape[1] < 3:
        raise ValueError(f"the DLR loss needs at least 3 classes, got {logits.shape[1]}")
    logits = logits.float()
    sorted_logits, order = logits.sort(dim=1)
    true_is_top = (order[:, -1] == target).float()
    true_logit = logits.gather(1, target[:, None]).squeeze(1)
    best_other = sorted_logits[:, -2] * true_is_top + sorted_logits[:, -1] * (1.0 - true_is_top)
    return -(true_logit - best_other) / (sorted_logits[:, -1] - sorted_logits[:, -3] + 1e-12)


def targeted_dlr_loss(logits: Tensor, target: Tensor, target_class: Tensor) -> Tensor:
    """Targeted DLR (Croce & Hein 2020, Sec. 4): push ``target_class`` above the true class."""
    if logits.shape[1] < 4:
        raise ValueError(f"the targeted DLR loss needs at least 4 classes, got {logits.shape[1]}")
    logits = logits.float()
    sorted_logits, _ = logits.sort(dim=1)
    true_logit = logits.gather(1, target[:, None]).squeeze(1)
    target_logit = logits.gather(1, target_class[:, None]).squeeze(1)
    scale = sorted_logits[:, -1] - 0.5 * (sorted_logits[:, -3] + sorted_logits[:, -4]) + 1e-12
    return -(true_logit - target_logit) / scale


def _step_direction(grad: Tensor, norm: str) -> Tensor:
    if norm == "linf":
        return grad.sign()
    grad_norm = grad.flatten(1).norm(dim=1).clamp_min(L2_NORM_FLOOR)
    return grad / _broadcast(grad_norm, grad)


def _project(point: Tensor, x: Tensor, eps_b: Tensor, norm: str, lo: float, hi: float) -> Tensor:
    delta = point - x
    if norm == "linf":
        delta = torch.maximum(torch.minimum(delta, eps_b), -eps_b)
    else:
        delta_norm = delta.flatten(1).norm(dim=1)
        scale = torch.clamp(eps_b.flatten() / (delta_norm + L2_NORM_FLOOR), max=1.0)
        delta = delta * _broadcast(scale, delta)
    return (x + delta).clamp(lo, hi)


def _random_start(x: Tensor, eps_b: Tensor, norm: str, generator: torch.Generator | None) -> Tensor:
    if norm == "linf":
        t = 2 * torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) - 1
        scale = t.flatten(1).abs().amax(dim=1).clamp_min(L2_NORM_FLOOR)
    else:
        t = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        scale = t.flatten(1).norm(dim=1).clamp_min(L2_NORM_FLOOR)
    return x + eps_b * t / _broadcast(scale, t)


def _apgd_run(
    objective: Objective,
    x: Tensor,
    eps_b: Tensor,
    steps: int,
    norm: str,
    lo: float,
    hi: float,
    generator: torch.Generator | None,
    random_start: bool = True,
    eot_samples: int = 1,
    early_stop: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    """One APGD run; returns (output point, its best loss, whether the sample was fooled).

    The output is the first misclassifying iterate of a fooled sample, else the max-loss point.
    ``eot_samples > 1`` averages the input gradient over that many forward/backward passes
    (Expectation over Transformation for randomised models, as ``eot_iter`` in fra31/auto-attack
    ``autopgd_base.py``). With ``early_stop`` (and an objective that reports success), a sample
    stops being computed once fooled: its output is already fixed and every piece of APGD state
    is per sample, so the result is the one of the full-batch run, at a fraction of the passes.
    """
    batch = x.shape[0]
    view = (batch, *([1] * (x.dim() - 1)))

    def loss_and_grad(point: Tensor, index: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
        point = point.detach().requires_grad_(True)
        loss, success = objective(point, index)
        (grad_sum,) = torch.autograd.grad(loss.sum(), point)
        for _ in range(1, eot_samples):
            loss, success = objective(point, index)
            grad_sum = grad_sum + torch.autograd.grad(loss.sum(), point)[0]
        grad = grad_sum if eot_samples == 1 else grad_sum / eot_samples
        return loss.detach().float(), grad.detach(), None if success is None else success.detach()

    start = _random_start(x, eps_b, norm, generator) if random_start else x
    x_adv = _project(start, x, eps_b, norm, lo, hi)
    loss, grad, success = loss_and_grad(x_adv, None)
    found = torch.zeros(batch, dtype=torch.bool, device=x.device)
    x_found = x_adv.clone()
    if success is not None:
        found |= success
    x_best, loss_best, grad_best = x_adv.clone(), loss.clone(), grad.clone()

    step_size = (2 * eps_b).expand(view).clone()
    x_prev = x_adv.clone()
    period = max(int(math.ceil(0.22 * steps)), 1)
    period_min = max(int(math.ceil(0.06 * steps)), 1)
    period_decrease = max(int(math.ceil(0.03 * steps)), 1)
    since_check = 0
    increases = torch.zeros(batch, device=x.device)
    loss_prev = loss.clone()
    loss_best_last_check = loss_best.clone()
    reduced_last_check = torch.ones(batch, dtype=torch.bool, device=x.device)

    knows_success = success is not None
    for iteration in range(steps):
        momentum = 1.0 if iteration == 0 else MOMENTUM
        index = None
        if early_stop and knows_success and bool(found.any()):
            index = (~found).nonzero().squeeze(1)
            if index.numel() == 0:
                break
        if index is None:
            direction = _step_direction(grad, norm)
            z = _project(x_adv + step_size * direction, x, eps_b, norm, lo, hi)
            x_next = _project(x_adv + momentum * (z - x_adv) + (1 - momentum) * (x_adv - x_prev),
                              x, eps_b, norm, lo, hi)
            x_prev, x_adv = x_adv, x_next
            loss, grad, success = loss_and_grad(x_adv, None)
            if success is not None:
                newly = success & ~found
                x_found[newly] = x_adv[newly]
                found |= success
        else:
            # Only the samples not fooled yet; fooled ones keep their (unused) state, so their
            # loss equals loss_prev and nothing below changes what they return.
            x_sub, eps_sub, adv_sub = x[index], eps_b[index], x_adv[index]
            z = _project(adv_sub + step_size[index] * _step_direction(grad[index], norm), x_sub, eps_sub,
                         norm, lo, hi)
            next_sub = _project(adv_sub + momentum * (z - adv_sub) + (1 - momentum) * (adv_sub - x_prev[index]),
                                x_sub, eps_sub, norm, lo, hi)
            x_prev[index] = adv_sub
            x_adv[index] = next_sub
            loss_sub, grad_sub, success_sub = loss_and_grad(next_sub, index)
            loss = loss_prev.clone()
            loss[index] = loss_sub
            grad[index] = grad_sub
            newly = index[success_sub]
            x_found[newly] = next_sub[success_sub]
            found[newly] = True
        increases += (loss > loss_prev).float()
        loss_prev = loss
        improved = loss > loss_best
        x_best[improved], grad_best[improved], loss_best[improved] = x_adv[improved], grad[improved], loss[improved]

        since_check += 1
        if since_check == period:
            oscillating = increases <= period * RHO                                   # Condition 1
            stalled = ~reduced_last_check & (loss_best_last_check >= loss_best)     # Condition 2
            reduce = oscillating | stalled
            reduced_last_check = reduce
            loss_best_last_check = loss_best.clone()
            if bool(reduce.any()):
                step_size[reduce] /= 2.0
                x_adv[reduce] = x_best[reduce]
                grad[reduce] = grad_best[reduce]
            since_check = 0
            increases.zero_()
            period = max(period - period_decrease, period_min)

    x_out = torch.where(_broadcast(found, x), x_found, x_best) if found.any() else x_best
    return x_out, loss_best, found


def _apgd(
    objective: Objective,
    x: Tensor,
    eps: float | Tensor,
    steps: int,
    norm: Norm,
    n_restarts: int,
    bounds: Bounds,
    generator: torch.Generator | None,
    random_start: bool = True,
    eot_samples: int = 1,
    early_stop: bool = True,
) -> Tensor:
    lo, hi = _check_bounds(bounds)
    if norm not in ("linf", "l2"):
        raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
    check_int("steps", steps, minimum=0)
    check_int("n_restarts", n_restarts, minimum=1)
    check_int("eot_samples", eot_samples, minimum=1)
    _check_inputs(x, lo, hi)
    eps_t = _check_eps(eps, x)
    with torch.inference_mode(False), torch.enable_grad():
        x = x.detach().clone() if x.is_inference() else x.detach()
        if steps == 0 or not bool((eps_t > 0).any()):
            return x.clone()
        eps_b = _broadcast(eps_t.to(x.dtype), x)
        if eps_b.dim() == 0:
            eps_b = eps_b.expand(x.shape[0]).reshape(-1, *([1] * (x.dim() - 1)))
        checked = False

        def checked_objective(point: Tensor, index: Tensor | None) -> tuple[Tensor, Tensor | None]:
            nonlocal checked
            loss, success = objective(point, index)
            if not checked:
                _evaluate_loss(lambda _: loss, point, point.shape[0], check=True)
                checked = True
            return loss, success

        # Without a random start the first run begins at x (Algorithm 1 allows any x0 in the
        # ball); restarts are random either way, or they would repeat the first run.
        best_x, best_loss, done = _apgd_run(checked_objective, x, eps_b, steps, norm, lo, hi, generator,
                                            random_start, eot_samples, early_stop)
        for _ in range(1, n_restarts):
            if early_stop and bool(done.any()):
                # As fra31/auto-attack ``APGDAttack.perturb``: restarts attack only the samples
                # no earlier run fooled.
                todo = (~done).nonzero().squeeze(1)
                if todo.numel() == 0:
                    break

                def sub_objective(point: Tensor, index: Tensor | None, todo: Tensor = todo) -> Any:
                    return checked_objective(point, todo if index is None else todo[index])

                x_run, loss_run, found = _apgd_run(sub_objective, x[todo], eps_b[todo], steps, norm, lo, hi,
                                                   generator, True, eot_samples, early_stop)
                better = found | (~found & (loss_run > best_loss[todo]))
                best_x[todo[better]], best_loss[todo[better]] = x_run[better], loss_run[better]
                done[todo[found]] = True
                continue
            x_run, loss_run, found = _apgd_run(checked_objective, x, eps_b, steps, norm, lo, hi, generator,
                                               True, eot_samples, early_stop)
            # A restart replaces a sample's result if it fooled the model where earlier runs had
            # not, or (no success either way) reached a higher loss.
            better = (found & ~done) | (~done & ~found & (loss_run > best_loss))
            best_x[better], best_loss[better] = x_run[better], loss_run[better]
            done |= found
        if not bool(torch.isfinite(best_x).all()):
            raise FloatingPointError("APGD produced NaN/inf inputs; check the model and loss")
        return best_x


def apgd(
    loss_fn: LossFn,
    x: Tensor,
    eps: float | Tensor = 8 / 255,
    steps: int = 100,
    norm: Norm = "linf",
    n_restarts: int = 1,
    bounds: Bounds = (0.0, 1.0),
    generator: torch.Generator | None = None,
    random_start: bool = True,
) -> Tensor:
    """APGD on an arbitrary per-sample loss (Croce & Hein 2020, Algorithm 1).

    Returns, per sample, the iterate with the highest loss over all restarts. With
    ``random_start=False`` the first run starts at ``x`` (deterministic evaluations).
    """
    return _apgd(lambda point, index: (loss_fn(point), None), x, eps, steps, norm, n_restarts, bounds,
                 generator, random_start)


class APGD(Attack):
    """Auto-PGD with the CE, DLR or targeted-DLR loss.

    ``loss="ce"`` works through the module protocol's ``attack_loss`` (any module). The DLR
    losses need class logits: callbacks call :meth:`perturb_logits` for them, passing the
    module's logits and the targets. On logits, a sample stops counting as "best by loss" once
    any iterate misclassifies it: that iterate is returned, as AutoAttack does.

    Args:
        eps: radius (float or ``"8/255"``).
        norm: ``"linf"`` or ``"l2"``.
        steps: iterations per run (100 in AutoAttack's standard version).
        n_restarts: random restarts; later restarts keep earlier successes.
        loss: ``"ce"``, ``"dlr"`` or ``"dlr_targeted"``.
        n_target_classes: for ``dlr_targeted``, the number of most likely other classes used as
            targets (9 in AutoAttack), each a separate run.
        bounds: valid input range.
        random_start: start the first run at a random point of the ball (AutoAttack does);
            ``False`` starts at the input, which makes the attack deterministic (restarts stay
            random).
        eot_samples: gradient passes averaged per step (Expectation over Transformation, 20 in
            AutoAttack's ``rand`` version for randomised defences); 1 for deterministic models.
        early_stop: on logits (:meth:`perturb_logits`), stop computing a sample once it is
            fooled and run restarts only on the samples not fooled yet, as AutoAttack does; the
            returned points are the same, the passes fewer.
        name: metric name override; defaults to ``apgd-ce_linf_eps8`` etc.
    """

    def __init__(
        self,
        eps: float | str = "8/255",
        norm: Norm = "linf",
        steps: int = 100,
        n_restarts: int = 1,
        loss: ApgdLoss = "ce",
        n_target_classes: int = 9,
        bounds: Bounds = (0.0, 1.0),
        random_start: bool = True,
        eot_samples: int = 1,
        early_stop: bool = True,
        name: str | None = None,
    ) -> None:
        super().__init__(eps=eps, norm=norm, bounds=bounds, name=name)
        check_int("eot_samples", eot_samples, minimum=1)
        check_bool("random_start", random_start)
        if loss not in ("ce", "dlr", "dlr_targeted"):
            raise ValueError(f"loss must be 'ce', 'dlr' or 'dlr_targeted', got {loss!r}")
        check_int("steps", steps, minimum=0)
        check_int("n_restarts", n_restarts, minimum=1)
        check_int("n_target_classes", n_target_classes, minimum=1)
        self.steps = steps
        self.n_restarts = n_restarts
        self.loss = loss
        self.n_target_classes = n_target_classes
        self.random_start = random_start
        self.eot_samples = eot_samples
        self.early_stop = bool(early_stop)

    @override
    @property
    def kind(self) -> str:  # type: ignore[override]
        base = {"ce": "apgd-ce", "dlr": "apgd-dlr", "dlr_targeted": "apgd-t"}[self.loss]
        return base if self.eot_samples == 1 else f"{base}-eot{self.eot_samples}"

    @property
    def requires_logits(self) -> bool:
        return self.loss != "ce"

    def __call__(
        self, loss_fn: LossFn, x: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        if self.requires_logits:
            raise TypeError(
                f"APGD with loss={self.loss!r} needs class logits: call "
                "perturb_logits(logits_fn, x, target), as the robust_lightning callbacks do"
            )
        return _apgd(lambda point, index: (loss_fn(point), None), x, self.eps, self.steps, self.norm,
                     self.n_restarts, self.bounds, generator, self.random_start, self.eot_samples)

    def perturb_logits(
        self,
        logits_fn: Callable[[Tensor], Tensor],
        x: Tensor,
        target: Tensor,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Attack a classifier given its logits function and integer targets."""

        def objective_for(loss_of: Callable[[Tensor, Tensor], Tensor], target: Tensor) -> Objective:
            def objective(point: Tensor, index: Tensor | None) -> tuple[Tensor, Tensor]:
                logits = logits_fn(point)
                t = target if index is None else target[index]
                return loss_of(logits, t), logits.argmax(dim=1) != t
            return objective

        def run(objective: Objective, points: Tensor) -> Tensor:
            return _apgd(objective, points, self.eps, self.steps, self.norm, self.n_restarts, self.bounds,
                         generator, self.random_start, self.eot_samples, self.early_stop)

        if self.loss == "ce":
            return run(objective_for(lambda z, t: F.cross_entropy(z.float(), t, reduction="none"), target), x)
        if self.loss == "dlr":
            return run(objective_for(dlr_loss, target), x)
        with torch.no_grad(), torch.inference_mode(False):
            ranked = logits_fn(x.detach().clone()).float().sort(dim=1)[1]
        n_targets = min(self.n_target_classes, ranked.shape[1] - 1)
        x_adv = x.detach().clone()
        fooled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        for rank in range(2, n_targets + 2):
            remaining = ~fooled
            if not bool(remaining.any()):
                break
            target_class = ranked[:, -rank]
            sub = remaining.nonzero().squeeze(1)
            sub_class = target_class[sub]

            def objective(point: Tensor, index: Tensor | None, t=target[sub], c=sub_class) -> tuple[Tensor, Tensor]:
                logits = logits_fn(point)
                t, c = (t, c) if index is None else (t[index], c[index])
                return targeted_dlr_loss(logits, t, c), logits.argmax(dim=1) != t

            sub_adv = run(objective, x[sub])
            with torch.no_grad(), torch.inference_mode(False):
                sub_fooled = logits_fn(sub_adv).argmax(dim=1) != target[sub]
            x_adv[sub] = sub_adv
            fooled[sub[sub_fooled]] = True
        return x_adv
