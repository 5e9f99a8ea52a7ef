"""FAB (Croce & Hein 2020), the fast adaptive boundary attack: minimal L-inf / L2 perturbations.

"Minimally distorted adversarial examples with a fast adaptive boundary attack" (ICML 2020).
FAB looks for the *smallest* perturbation that changes the prediction, so one run gives every
sample's minimal adversarial norm (hence robust accuracy at every radius at once) as well as the
robust accuracy at a fixed ``eps``.

Public interface (what the AutoAttack suite and the robustness report build on)::

    result = fab_attack(logits_fn, x, y, eps=0.1, norm="linf")       # full minimisation
    result.x_adv          # (B, ...) smallest-norm adversarial found per sample (x where none)
    result.norms          # (B,) its norm; 0.0 if x is already misclassified, inf if none found
    result.robust(eps)    # (B,) bool: no adversarial of norm <= eps was found
    robust_accuracy_at_radii(result.norms, [0.05, 0.1, 0.2])   # the accuracy-vs-radius curve

    attack = FAB(eps=0.1, norm="linf", targeted=True)       # FAB-T as in AutoAttack "standard"
    x_adv = attack.perturb_logits(logits_fn, x, y, generator=g)  # within eps (x elsewhere)
    result = attack.minimize(logits_fn, x, y, generator=g)      # FABResult, no stop at eps
    norms = attack.minimal_norms(logits_fn, x, y, generator=g)  # == result.norms

``logits_fn`` maps a batch to class logits ``(B, K)``; an ``nn.Module`` is run in eval mode with
frozen parameters (:func:`~robust_lightning.attacks.core.attack_mode`). ``perturb_logits`` stops
a sample as soon as it has an adversarial within ``eps`` (per-sample early exit; the robust
accuracy at eps is the same as running on), ``minimize`` runs every sample for all ``n_iter``
steps of every restart and target class. Samples misclassified at ``x`` are never attacked.

What we take from the paper (equation numbers as we read arXiv:1907.02044v2; "our reading"
where the numbering is uncertain) and from the authors' code, fra31/auto-attack
``autoattack/fab_base.py`` (``attack_single_run``, ``perturb``) and ``autoattack/fab_pt.py``
(``get_diff_logits_grads_batch[_targeted]``), also shipped as ``torchattacks/attacks/fab.py``:

* Linearisation of the decision boundary between the true class ``c`` and class ``l`` at the
  iterate (Sec. 3.1, Eq. 3): the hyperplane
  ``pi_l(z): f_l(x_i) - f_c(x_i) + <grad f_l(x_i) - grad f_c(x_i), z - x_i> = 0``;
  untargeted FAB takes the closest one in the attacked norm (Eq. 4),
  ``s = argmin_l |f_l - f_c| / ||grad f_l - grad f_c||_q`` with ``q`` the dual norm (L1 for
  L-inf, L2 for L2); FAB-T uses the single hyperplane of its target class. The Jacobian comes from
  one backward pass per class (K - 1 here: only differences to the true class are needed).
* The projection ``proj_p(z, pi, C)`` of a point onto the intersection of a hyperplane and the
  box ``C = [lo, hi]^d`` (Sec. 3.1, Eq. 2; the reference's ``projection_linf`` /
  ``projection_l2`` in ``fab_projections.py``). We solve it ourselves (:func:`project_onto_hyperplane_box`):
  the optimal perturbation is ``d_i = s_i * min(lambda * v_i, room_i)`` with ``v_i = 1`` (L-inf)
  or ``|w_i|`` (L2), a piecewise-linear equation in ``lambda`` solved exactly by sorting its
  breakpoints. Where the hyperplane misses the box we return the box corner nearest to it, as the
  reference does.
* The biased step (Sec. 3.2, Eq. 5-6 in our reading)
  ``x_{i+1} = P_C((1 - alpha)(x_i + eta d_i) + alpha (x_orig + eta d_orig))`` with
  ``d_i = proj(x_i) - x_i``, ``d_orig = proj(x_orig) - x_orig`` on the same hyperplane,
  ``alpha = min(||d_i|| / (||d_i|| + ||d_orig||), alpha_max)`` (norms floored at 1e-8),
  extrapolation ``eta = 1.05`` and ``alpha_max = 0.1``.
* The backward step (Sec. 3.2, "final search" / Eq. 7 in our reading): once ``x_{i+1}`` is
  adversarial it is recorded if its norm is the smallest so far, then pulled back to
  ``x_orig + beta (x_{i+1} - x_orig)`` with ``beta = 0.9``.
* Restarts: the first run starts at ``x``, later ones at ``x + (eps / 2) t / ||t||`` (L-inf:
  ``t ~ U[-1, 1]^d``, L2: ``t ~ N(0, I)``), clamped to the box; that is all ``eps`` does besides
  defining robustness at eps. FAB-T runs over the ``n_target_classes`` most likely other classes
  of the clean logits (ranks 2 .. n + 1), 9 in AutoAttack, with ``n_restarts`` each; AutoAttack's
  "standard" suite uses FAB-T with ``n_iter=100``, ``n_restarts=1``.

Differences from the reference, by design: all randomness comes from the given
:class:`torch.Generator` (the reference reseeds the global RNG), and ``perturb_logits`` drops a
sample once it has an adversarial within eps (the reference runs it to the end of the run).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn
from typing_extensions import override

from robust_lightning._validation import check_bool, check_int, check_non_negative, check_number
from robust_lightning.attacks.base import Attack
from robust_lightning.attacks.core import (
    Bounds,
    LossFn,
    Norm,
    _check_bounds,
    _check_inputs,
    attack_mode,
)
from robust_lightning.errors import InvalidArgumentError, InvalidArgumentTypeError

__all__ = ["FAB", "FABResult", "fab_attack", "project_onto_hyperplane_box", "robust_accuracy_at_radii"]

LogitsFn = Callable[[Tensor], Tensor]

# Floors from the reference: step norms (alpha's denominator) and the dual norm of the gradient.
_STEP_NORM_FLOOR = 1e-8
_DUAL_NORM_FLOOR = 1e-12
# |w_i| below this is treated as zero (coordinate not moved), as in the reference's L2 projection.
_ZERO_WEIGHT = 1e-8


class FABResult(NamedTuple):
    """What :func:`fab` found, per sample.

    Attributes:
        x_adv: the smallest-norm adversarial input found; ``x`` where none was found and where
            ``x`` is already misclassified.
        norms: ``||x_adv - x||`` in the attack's norm for fooled samples, ``0.0`` for samples
            misclassified at ``x``, ``inf`` where no adversarial was found.
    """

    x_adv: Tensor
    norms: Tensor

    def robust(self, eps: float) -> Tensor:
        """``(B,)`` bool: correctly classified and no adversarial of norm ``<= eps`` found."""
        return self.norms > eps

    def robust_accuracy(self, radii: Sequence[float] | Tensor) -> Tensor:
        """Robust accuracy at each radius (see :func:`robust_accuracy_at_radii`)."""
        return robust_accuracy_at_radii(self.norms, radii)


def robust_accuracy_at_radii(norms: Tensor, radii: Sequence[float] | Tensor) -> Tensor:
    """The robust-accuracy-vs-radius curve from per-sample minimal adversarial norms.

    A sample is robust at radius ``r`` when its minimal norm is ``> r`` (misclassified samples
    have norm 0, so at ``r = 0`` this is the clean accuracy); the curve is ``1 - CDF(norms)``.

    Args:
        norms: ``(B,)`` as in :attr:`FABResult.norms` (``inf`` = no adversarial found).
        radii: the radii to evaluate.

    Returns:
        ``(len(radii),)`` float tensor on ``norms``' device.
    """
    if not isinstance(norms, Tensor) or norms.dim() != 1 or norms.numel() == 0:
        raise InvalidArgumentError(f"norms must be a non-empty 1-D tensor, got {norms!r}")
    radii_t = torch.as_tensor(radii, dtype=torch.float64, device=norms.device).flatten()
    return (norms.double()[None, :] > radii_t[:, None]).double().mean(dim=1).float()


def project_onto_hyperplane_box(points: Tensor, w: Tensor, b: Tensor, norm: Norm,
                                lo: float = 0.0, hi: float = 1.0) -> Tensor:
    """Minimal-norm move onto ``{z in [lo, hi]^d : <w, z> = b}`` (Croce & Hein 2020, Eq. 2).

    Solves ``argmin_d ||d||_p`` s.t. ``<w, t + d> = b`` and ``lo <= t + d <= hi`` for each row
    ``t`` of ``points`` (the role of the reference's ``projection_linf`` / ``projection_l2``).
    With ``r = b - <w, t>``, each coordinate moves in the direction ``s_i = sign(w_i r)`` by
    ``min(lambda v_i, room_i)``, where ``room_i`` is its distance to the box face in that
    direction and ``v_i = 1`` (L-inf: every coordinate moves by the same amount until it hits the
    box) or ``v_i = |w_i|`` (L2: the KKT point, a clipped multiple of ``w``). The reached
    ``<w, d> s`` is ``g(lambda) = sum_i |w_i| min(lambda v_i, room_i)``, nondecreasing and
    piecewise linear with breakpoints ``room_i / v_i``; sorting them gives the segment where
    ``g = |r|`` and ``lambda`` in closed form. If even ``g(inf) < |r|`` (the hyperplane misses the
    box), every coordinate goes to its face: the box corner nearest to the hyperplane.

    Args:
        points: ``(n, d)`` points inside the box.
        w: ``(n, d)`` hyperplane normals.
        b: ``(n,)`` offsets.
        norm: ``"linf"`` or ``"l2"``.
        lo: lower face of the box.
        hi: upper face of the box.

    Returns:
        ``(n, d)`` perturbations ``d`` (``points + d`` is the projection).
    """
    residual = b - (w * points).sum(dim=1)
    abs_w = w.abs()
    moves = abs_w > _ZERO_WEIGHT
    direction = torch.sign(w) * torch.sign(residual)[:, None]
    room = torch.where(direction > 0, hi - points, points - lo).clamp_min(0)
    room = torch.where(moves, room, torch.zeros_like(room))
    rate = torch.ones_like(abs_w) if norm == "linf" else torch.where(moves, abs_w, torch.ones_like(abs_w))
    breakpoints = room / rate
    order = breakpoints.argsort(dim=1)
    sorted_breaks = breakpoints.gather(1, order)
    saturated_gain = (abs_w * room).gather(1, order).cumsum(dim=1)          # S_k
    slope_weight = (abs_w * rate * moves).gather(1, order)
    remaining_slope = slope_weight.sum(dim=1, keepdim=True) - slope_weight.cumsum(dim=1)  # T_k
    gain_at_breaks = saturated_gain + sorted_breaks * remaining_slope
    need = residual.abs()
    below = (gain_at_breaks < need[:, None]).sum(dim=1)                      # segments passed
    feasible = below < points.shape[1]
    previous = (below - 1).clamp_min(0)[:, None]
    gain_before = torch.where(below > 0, saturated_gain.gather(1, previous).squeeze(1), torch.zeros_like(need))
    slope_before = torch.where(below > 0, remaining_slope.gather(1, previous).squeeze(1),
                               slope_weight.sum(dim=1))
    lam = (need - gain_before) / slope_before.clamp_min(torch.finfo(points.dtype).tiny)
    lam = torch.where(feasible, lam, torch.full_like(lam, math.inf))
    return direction * torch.minimum(lam[:, None] * rate, room)


def _norm(delta: Tensor, norm: str) -> Tensor:
    flat = delta.flatten(1)
    return flat.abs().amax(dim=1) if norm == "linf" else flat.norm(dim=1)


def _boundary_hyperplanes(logits_fn: LogitsFn, x: Tensor, target: Tensor, target_class: Tensor | None,
                          input_dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """``f_l - f_c`` and its input gradient at ``x`` for the classes FAB linearises (Eq. 3).

    Returns ``(diff (n, m), grad (n, m, d))`` with ``m = K - 1`` (untargeted: every other class)
    or ``m = 1`` (targeted); gradients w.r.t. the input only, one backward per class.
    """
    with torch.enable_grad():
        point = x.detach().to(input_dtype).requires_grad_(True)
        logits = logits_fn(point)
    true_logit = logits.gather(1, target[:, None])
    if target_class is None:
        classes = torch.arange(logits.shape[1], device=x.device).expand(logits.shape[0], -1)
        others = classes[classes != target[:, None]].view(logits.shape[0], -1)
    else:
        others = target_class[:, None]
    with torch.enable_grad():
        diff = logits.gather(1, others) - true_logit
    n_planes = others.shape[1]
    grads = torch.empty(x.shape[0], n_planes, x[0].numel(), device=x.device, dtype=x.dtype)
    for column in range(n_planes):
        # Samples are independent (eval mode), so the gradient of the batch sum is per sample.
        (grad,) = torch.autograd.grad(diff[:, column].sum(), point, retain_graph=column < n_planes - 1)
        grads[:, column] = grad.flatten(1)
    return diff.detach().to(x.dtype), grads


def _random_start(x: Tensor, eps: float, norm: str, lo: float, hi: float,
                  generator: torch.Generator | None) -> Tensor:
    if norm == "linf":
        noise = 2 * torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) - 1
    else:
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    scale = _norm(noise, norm).clamp_min(torch.finfo(x.dtype).tiny).view(-1, *([1] * (x.dim() - 1)))
    return (x + 0.5 * eps * noise / scale).clamp(lo, hi)


def _fab_run(logits_fn: LogitsFn, x0: Tensor, target: Tensor, target_class: Tensor | None, eps: float,
             norm: Norm, n_iter: int, alpha_max: float, eta: float, beta: float, lo: float, hi: float,
             random_start: bool, generator: torch.Generator | None, stop_at_eps: bool,
             input_dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """One FAB run (reference ``attack_single_run``) on correctly classified ``x0``.

    Returns the smallest-norm adversarial found per sample and its norm (inf where none).
    """
    n = x0.shape[0]
    view = (-1, *([1] * (x0.dim() - 1)))
    best_norm = torch.full((n,), math.inf, device=x0.device, dtype=x0.dtype)
    best_x = x0.clone()
    x_iter = _random_start(x0, eps, norm, lo, hi, generator) if random_start else x0.clone()
    active = torch.arange(n, device=x0.device)
    for _ in range(n_iter):
        if active.numel() == 0:
            break
        x_cur, x_orig = x_iter[active], x0[active]
        y_cur = target[active]
        diff, grad = _boundary_hyperplanes(logits_fn, x_cur, y_cur,
                                           None if target_class is None else target_class[active], input_dtype)
        with torch.no_grad():
            dual = grad.abs().sum(dim=2) if norm == "linf" else grad.norm(dim=2)
            closest = (diff.abs() / (dual + _DUAL_NORM_FLOOR)).argmin(dim=1)               # Eq. 4
            rows = torch.arange(active.numel(), device=x0.device)
            w = grad[rows, closest]
            b = (w * x_cur.flatten(1)).sum(dim=1) - diff[rows, closest]                    # Eq. 3
            both = project_onto_hyperplane_box(torch.cat((x_cur.flatten(1), x_orig.flatten(1))),
                                               torch.cat((w, w)), torch.cat((b, b)), norm, lo, hi)
            step_norms = _norm(both, norm).clamp_min(_STEP_NORM_FLOOR)
            d_cur, d_orig = both[: active.numel()].view_as(x_cur), both[active.numel():].view_as(x_cur)
            norm_cur, norm_orig = step_norms[: active.numel()], step_norms[active.numel():]
            alpha = (norm_cur / (norm_cur + norm_orig)).clamp(0.0, alpha_max).view(view)
            x_next = ((x_cur + eta * d_cur) * (1 - alpha) + (x_orig + eta * d_orig) * alpha).clamp(lo, hi)
            fooled = logits_fn(x_next.to(input_dtype)).argmax(dim=1) != y_cur
            distance = _norm(x_next - x_orig, norm)
            smaller = fooled & (distance < best_norm[active])
            best_norm[active[smaller]] = distance[smaller]
            best_x[active[smaller]] = x_next[smaller]
            x_next = torch.where(fooled.view(view), x_orig + beta * (x_next - x_orig), x_next)  # backward step
            x_iter[active] = x_next
            if stop_at_eps:
                active = active[best_norm[active] > eps]
    return best_x, best_norm


def _check_fab_arguments(norm: object, n_iter: object, n_restarts: object, targeted: object,
                         n_target_classes: object, alpha_max: object, eta: object, beta: object) -> None:
    """The checks :func:`fab` and :class:`FAB` share, each error naming its argument."""
    if norm not in ("linf", "l2"):
        raise InvalidArgumentError(f"norm must be 'linf' or 'l2', got {norm!r}")
    check_int("n_iter", n_iter, minimum=0)
    check_int("n_restarts", n_restarts, minimum=1)
    check_int("n_target_classes", n_target_classes, minimum=1)
    check_bool("targeted", targeted)
    check_number("alpha_max", alpha_max, 0.0, 1.0)
    check_number("beta", beta, 0.0, 1.0, low_open=True)
    check_number("eta", eta, 0.0, low_open=True)


def fab_attack(
    logits_fn: LogitsFn,
    x: Tensor,
    target: Tensor,
    eps: float,
    norm: Norm = "linf",
    n_iter: int = 100,
    n_restarts: int = 1,
    targeted: bool = False,
    n_target_classes: int = 9,
    alpha_max: float = 0.1,
    eta: float = 1.05,
    beta: float = 0.9,
    bounds: Bounds = (0.0, 1.0),
    generator: torch.Generator | None = None,
    stop_at_eps: bool = False,
) -> FABResult:
    """FAB / FAB-T (Croce & Hein 2020): the smallest adversarial perturbation it finds per sample.

    Args:
        logits_fn: class logits ``(B, K)`` of a batch; an ``nn.Module`` runs under
            :func:`~robust_lightning.attacks.core.attack_mode` (eval mode, frozen parameters).
        x: clean inputs in ``bounds``; device and dtype of the attack.
        target: true labels ``(B,)``.
        eps: scale of the random restarts (``eps / 2``) and, with ``stop_at_eps``, the radius at
            which a sample counts as broken.
        norm: ``"linf"`` or ``"l2"``.
        n_iter: iterations per run (100 in AutoAttack).
        n_restarts: runs per target; the first starts at ``x``, the others at random points.
        targeted: FAB-T: one run per target class instead of the closest-boundary choice.
        n_target_classes: FAB-T's number of most likely other classes (9 in AutoAttack); capped
            at ``K - 1``.
        alpha_max: cap of the bias towards ``x`` in the step (Eq. 6).
        eta: extrapolation of the projection step (overshoot past the hyperplane).
        beta: backward-step factor once a point is adversarial.
        bounds: valid input range (the box ``C``).
        generator: the only source of randomness (restarts); must live on ``x``'s device.
        stop_at_eps: drop a sample once it has an adversarial of norm ``<= eps`` (robust accuracy
            at eps only; later restarts / targets then run only on the rest, as AutoAttack does).

    Returns:
        :class:`FABResult` (``x_adv``, ``norms``).

    Raises:
        InvalidArgumentError / InvalidArgumentTypeError: naming the offending argument.
    """
    lo, hi = _check_bounds(bounds)
    _check_fab_arguments(norm, n_iter, n_restarts, targeted, n_target_classes, alpha_max, eta, beta)
    check_non_negative("eps", eps)
    check_bool("stop_at_eps", stop_at_eps)
    _check_inputs(x, lo, hi)
    if not isinstance(target, Tensor) or target.dtype in (torch.bool,) or target.is_floating_point() \
            or target.shape != (x.shape[0],):
        raise InvalidArgumentError(
            f"target must be an integer tensor of shape ({x.shape[0]},), got "
            f"{tuple(target.shape) if isinstance(target, Tensor) else type(target).__name__}")
    if generator is not None and torch.device(generator.device).type != x.device.type:
        raise InvalidArgumentError(
            f"generator lives on {generator.device} but x is on {x.device}; create it with "
            "torch.Generator(device=x.device)")
    context = attack_mode(logits_fn) if isinstance(logits_fn, nn.Module) else contextlib.nullcontext()
    input_dtype = x.dtype
    opmath = torch.float64 if x.dtype == torch.float64 else torch.float32
    # inference_mode(False) first: Lightning evaluates under inference mode and the attack needs
    # autograd; the gradient is taken explicitly inside the run, everything else is no_grad.
    with torch.inference_mode(False), context:
        x = x.detach().clone()
        target = target.detach().clone().to(x.device).long()
        with torch.no_grad():
            clean_logits = logits_fn(x).float()
        if clean_logits.dim() != 2 or clean_logits.shape[0] != x.shape[0] or clean_logits.shape[1] < 2:
            raise InvalidArgumentError(
                f"logits_fn must return class logits of shape ({x.shape[0]}, K >= 2), got "
                f"{tuple(clean_logits.shape)}")
        n_classes = clean_logits.shape[1]
        if bool(((target < 0) | (target >= n_classes)).any()):
            raise InvalidArgumentError(f"target must hold class indices in [0, {n_classes}), got "
                                       f"values in [{int(target.min())}, {int(target.max())}]")
        x_work = x.to(opmath)
        x_adv = x_work.clone()
        norms = torch.full((x.shape[0],), math.inf, device=x.device, dtype=opmath)
        correct = clean_logits.argmax(dim=1) == target
        norms[~correct] = 0.0
        if targeted:
            ranked = clean_logits.argsort(dim=1)
            target_classes: list[Tensor | None] = [ranked[:, -rank] for rank in
                                                   range(2, min(n_target_classes, n_classes - 1) + 2)]
        else:
            target_classes = [None]
        if n_iter > 0:
            todo = correct.nonzero().squeeze(1)
            for target_class in target_classes:
                for restart in range(n_restarts):
                    if stop_at_eps:
                        todo = todo[norms[todo] > eps]
                    if todo.numel() == 0:
                        break
                    x_run, norm_run = _fab_run(
                        logits_fn, x_work[todo], target[todo], None if target_class is None else target_class[todo],
                        float(eps), norm, n_iter, float(alpha_max), float(eta), float(beta), lo, hi,
                        random_start=restart > 0, generator=generator, stop_at_eps=stop_at_eps,
                        input_dtype=input_dtype)
                    smaller = norm_run < norms[todo]
                    norms[todo[smaller]] = norm_run[smaller]
                    x_adv[todo[smaller]] = x_run[smaller]
        if not bool(torch.isfinite(x_adv).all()):
            raise FloatingPointError("FAB produced NaN/inf inputs; check the model's logits and gradients")
    return FABResult(x_adv.to(input_dtype), norms)


class FAB(Attack):
    """FAB / FAB-T as a config-friendly class; needs class logits (``requires_logits``).

    As an entry of ``RobustnessEvaluation(attacks=[...])`` it reports robust accuracy at ``eps``:
    :meth:`perturb_logits` returns the adversarial input where FAB found one within ``eps`` and
    ``x`` elsewhere. :meth:`minimize` / :meth:`minimal_norms` give the per-sample minimal norms
    behind the robust-accuracy-vs-radius curve. AutoAttack's "standard" suite uses
    ``FAB(eps, norm, targeted=True, n_target_classes=9, n_iter=100, n_restarts=1)``.

    Args:
        eps: radius (float or ``"8/255"``); also the scale of random restarts (``eps / 2``).
        norm: ``"linf"`` or ``"l2"``.
        n_iter: iterations per run (100 in AutoAttack).
        n_restarts: runs per target (AutoAttack: 1 for FAB-T, 5 for untargeted FAB in "plus").
        targeted: FAB-T over the ``n_target_classes`` most likely other classes.
        n_target_classes: 9 in AutoAttack.
        alpha_max: 0.1 in AutoAttack (Eq. 6).
        eta: 1.05 in AutoAttack (extrapolation).
        beta: 0.9 in AutoAttack (backward step).
        bounds: valid input range.
        name: metric name override; defaults to ``fab-t_linf_eps8`` etc.
    """

    requires_logits = True

    def __init__(
        self,
        eps: float | str = "8/255",
        norm: Norm = "linf",
        n_iter: int = 100,
        n_restarts: int = 1,
        targeted: bool = False,
        n_target_classes: int = 9,
        alpha_max: float = 0.1,
        eta: float = 1.05,
        beta: float = 0.9,
        bounds: Bounds = (0.0, 1.0),
        name: str | None = None,
    ) -> None:
        super().__init__(eps=eps, norm=norm, bounds=bounds, name=name)
        _check_fab_arguments(norm, n_iter, n_restarts, targeted, n_target_classes, alpha_max, eta, beta)
        self.n_iter = n_iter
        self.n_restarts = n_restarts
        self.targeted = targeted
        self.n_target_classes = n_target_classes
        self.alpha_max = float(alpha_max)
        self.eta = float(eta)
        self.beta = float(beta)

    @override
    @property
    def kind(self) -> str:  # type: ignore[override]
        return "fab-t" if self.targeted else "fab"

    def _run(self, logits_fn: LogitsFn, x: Tensor, target: Tensor, generator: torch.Generator | None,
             stop_at_eps: bool) -> FABResult:
        return fab_attack(logits_fn, x, target, eps=self.eps, norm=self.norm, n_iter=self.n_iter,
                   n_restarts=self.n_restarts, targeted=self.targeted, n_target_classes=self.n_target_classes,
                   alpha_max=self.alpha_max, eta=self.eta, beta=self.beta, bounds=self.bounds,
                   generator=generator, stop_at_eps=stop_at_eps)

    def perturb_logits(self, logits_fn: LogitsFn, x: Tensor, target: Tensor,
                       generator: torch.Generator | None = None) -> Tensor:
        """Adversarial inputs within ``eps`` where FAB finds one, ``x`` elsewhere."""
        result = self._run(logits_fn, x, target, generator, stop_at_eps=True)
        within = (result.norms <= self.eps).view(-1, *([1] * (x.dim() - 1)))
        return torch.where(within, result.x_adv, x.detach())

    def minimize(self, logits_fn: LogitsFn, x: Tensor, target: Tensor,
                 generator: torch.Generator | None = None) -> FABResult:
        """Full minimisation (no stop at eps): smallest adversarial and its norm per sample."""
        return self._run(logits_fn, x, target, generator, stop_at_eps=False)

    def minimal_norms(self, logits_fn: LogitsFn, x: Tensor, target: Tensor,
                      generator: torch.Generator | None = None) -> Tensor:
        """``(B,)`` minimal adversarial norms (0 if misclassified at ``x``, inf if none found)."""
        return self.minimize(logits_fn, x, target, generator).norms

    def __call__(self, loss_fn: LossFn, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        raise InvalidArgumentTypeError(
            "FAB needs class logits: call perturb_logits(logits_fn, x, target), as the "
            "robust_lightning callbacks do")
