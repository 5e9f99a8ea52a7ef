"""Square attack (Andriushchenko et al. 2020), L-inf and L2, score-based.

"Square Attack: a query-efficient black-box adversarial attack via random search" (ECCV 2020),
Algorithms 1-3. The attack uses model outputs only (no gradients), which is why it exposes
gradient masking: a defence that breaks gradients does not slow it down.

Taken from the reference implementation in fra31/auto-attack (``autoattack/square.py``):

* the margin loss ``z_y - max_{j != y} z_j`` (a sample is fooled when it is <= 0);
* the ``p_init`` schedule (Sec. 3, "piecewise decay"): the fraction of pixels changed is halved
  at 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 of 10000 rescaled queries;
* L-inf: stripe initialisation (a random sign per column and channel), then squares of side
  ``round(sqrt(p * n_features / c))`` set to ``+-2 eps`` per channel and projected;
* L2: the pseudo-Gaussian "eta" windows, a 5x5 grid initialisation, and the update that moves
  the mass of a second window into the first so the norm stays at eps;
* one window position per iteration for the whole batch, samples that are fooled stop being
  queried (per-sample early exit).

All randomness comes from the given :class:`torch.Generator` (the reference uses the global
RNG and Python's ``random``), so a run is reproducible from its seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from robust_lightning._validation import check_int, check_number
from robust_lightning.attacks.base import Attack
from robust_lightning.attacks.core import (
    Bounds,
    LossFn,
    Norm,
    _check_bounds,
    _check_inputs,
)
from robust_lightning.errors import InvalidArgumentError, InvalidArgumentTypeError

__all__ = ["Square", "margin", "square_attack"]

LogitsFn = Callable[[Tensor], Tensor]


def margin(logits: Tensor, target: Tensor) -> Tensor:
    """``z_y - max_{j != y} z_j`` per sample; <= 0 iff the sample is misclassified."""
    logits = logits.float()
    true = logits.gather(1, target[:, None]).squeeze(1)
    others = logits.scatter(1, target[:, None], float("-inf"))
    return true - others.amax(dim=1)


def p_selection(p_init: float, iteration: int, n_queries: int) -> float:
    """Fraction of features changed at ``iteration`` (reference schedule, rescaled to 10k)."""
    it = int(iteration / max(n_queries, 1) * 10000)
    for threshold, divisor in ((8000, 512), (6000, 256), (4000, 128), (2000, 64), (1000, 32),
                               (500, 16), (200, 8), (50, 4), (10, 2)):
        if it > threshold:
            return p_init / divisor
    return p_init


def _randint(low: int, high: int, generator: torch.Generator | None, device: torch.device) -> int:
    """Uniform integer in [low, high) (``high > low``), drawn from ``generator``."""
    return int(torch.randint(low, max(high, low + 1), (1,), generator=generator, device=device).item())


def _signs(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device,
           dtype: torch.dtype) -> Tensor:
    return torch.randint(0, 2, shape, generator=generator, device=device).to(dtype) * 2 - 1


def _eta_rectangles(x: int, y: int, device: torch.device) -> Tensor:
    delta = torch.zeros(x, y, device=device)
    x_c, y_c = x // 2 + 1, y // 2 + 1
    c0, c1 = x_c - 1, y_c - 1
    for counter in range(max(x_c, y_c)):
        delta[max(c0, 0):min(c0 + 2 * counter + 1, x), max(c1, 0):min(c1 + 2 * counter + 1, y)] += (
            1.0 / (counter + 1) ** 2)
        c0, c1 = c0 - 1, c1 - 1
    return delta / delta.pow(2).sum(dim=0, keepdim=True).sqrt()


def _eta(s: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """The pseudo-Gaussian ``s x s`` window of Algorithm 3 (unit L2 norm, random orientation)."""
    delta = torch.zeros(s, s, device=device)
    delta[: s // 2] = _eta_rectangles(s // 2, s, device)
    delta[s // 2:] = -_eta_rectangles(s - s // 2, s, device)
    delta = delta / delta.pow(2).sum().sqrt()
    if _randint(0, 2, generator, device) == 1:
        delta = delta.t()
    return delta


def _l2(t: Tensor) -> Tensor:
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))


MarginFn = Callable[[Tensor, Tensor], Tensor]


class _NormSteps(NamedTuple):
    """The two norm-specific parts of the random search; :func:`_random_search` does the rest.

    Both return points that may leave ``bounds``: the search clamps them.

    Attributes:
        init: ``(x, eps, generator) -> x_init``, the starting point at distance eps.
        propose: ``(x, x_best, eps, p, generator) -> x_new``, one candidate per row of ``x_best``
            that changes a window covering about a fraction ``p`` of the features.
    """

    init: Callable[[Tensor, float, torch.Generator | None], Tensor]
    propose: Callable[[Tensor, Tensor, float, float, torch.Generator | None], Tensor]


def _init_linf(x: Tensor, eps: float, generator: torch.Generator | None) -> Tensor:
    """The reference's stripe initialisation: one random sign ``+-eps`` per column and channel."""
    b, c, _, w = x.shape
    return x + eps * _signs((b, c, 1, w), generator, x.device, x.dtype)


def _propose_linf(x: Tensor, x_best: Tensor, eps: float, p: float, generator: torch.Generator | None) -> Tensor:
    """Alg. 2: one square of side ``sqrt(p * h * w)`` set to ``+-2 eps`` per channel, projected back to the ball."""
    _, c, h, w = x.shape
    # p * n_features / c as in the reference, not p * h * w: the float rounding may differ.
    s = min(max(int(round(math.sqrt(p * (c * h * w) / c))), 1), h - 1)
    vh, vw = _randint(0, h - s, generator, x.device), _randint(0, w - s, generator, x.device)
    new_deltas = torch.zeros(c, h, w, device=x.device, dtype=x.dtype)
    new_deltas[:, vh:vh + s, vw:vw + s] = 2.0 * eps * _signs((c, 1, 1), generator, x.device, x.dtype)
    return torch.minimum(torch.maximum(x_best + new_deltas, x - eps), x + eps)


def _init_l2(x: Tensor, eps: float, generator: torch.Generator | None) -> Tensor:
    """A 5x5 grid of eta windows with random signs per sample and channel, scaled to norm eps."""
    b, c, h, w = x.shape
    delta_init = torch.zeros_like(x)
    s = max(h // 5, 1)
    start = (h - s * 5) // 2
    vh = start
    for _ in range(h // s):
        vw = start
        for _ in range(w // s):
            if vh + s <= h and vw + s <= w:
                delta_init[:, :, vh:vh + s, vw:vw + s] += (
                    _eta(s, generator, x.device).view(1, 1, s, s) * _signs((b, c, 1, 1), generator, x.device, x.dtype))
            vw += s
        vh += s
    return x + delta_init / (_l2(delta_init) + 1e-12) * eps


def _propose_l2(x: Tensor, x_best: Tensor, eps: float, p: float, generator: torch.Generator | None) -> Tensor:
    """Alg. 3: a new eta window in window 1 takes the mass of window 2, so the norm stays at eps."""
    n, c, h, w = x.shape
    delta = x_best - x
    # Odd side >= 3 so the eta window has a centre; at most the shorter image side (the reference
    # caps by h only, which breaks the window arithmetic when h > w).
    s = max(int(round(math.sqrt(p * (c * h * w) / c))), 3)
    if s % 2 == 0:
        s += 1
    side = min(h, w)
    s = min(s, side if side % 2 else side - 1)
    vh, vw = _randint(0, h - s, generator, x.device), _randint(0, w - s, generator, x.device)
    mask_1 = torch.zeros_like(x)
    mask_1[:, :, vh:vh + s, vw:vw + s] = 1.0
    norms_window_1 = delta[:, :, vh:vh + s, vw:vw + s].pow(2).sum(dim=(-2, -1), keepdim=True).sqrt()
    vh2, vw2 = _randint(0, h - s, generator, x.device), _randint(0, w - s, generator, x.device)
    mask_2 = torch.zeros_like(x)
    mask_2[:, :, vh2:vh2 + s, vw2:vw2 + s] = 1.0
    norms_image = _l2(delta)
    norms_windows = _l2(delta * torch.maximum(mask_1, mask_2))
    new_deltas = _eta(s, generator, x.device).view(1, 1, s, s) * _signs((n, c, 1, 1), generator, x.device, x.dtype)
    new_deltas = new_deltas + delta[:, :, vh:vh + s, vw:vw + s] / (norms_window_1 + 1e-12)
    new_deltas = new_deltas / new_deltas.pow(2).sum(dim=(-2, -1), keepdim=True).sqrt().clamp_min(1e-12)
    # The budget left (eps^2 - |delta|^2, spread over channels) plus what the two windows held.
    new_deltas = new_deltas * ((eps ** 2 - norms_image ** 2).clamp_min(0) / c + norms_windows ** 2).sqrt()
    delta[:, :, vh2:vh2 + s, vw2:vw2 + s] = 0.0
    delta[:, :, vh:vh + s, vw:vw + s] = new_deltas
    return x + delta / (_l2(delta) + 1e-12) * eps


_NORM_STEPS = {"linf": _NormSteps(_init_linf, _propose_linf), "l2": _NormSteps(_init_l2, _propose_l2)}


def _random_search(margin_fn: MarginFn, x: Tensor, eps: float, n_queries: int, p_init: float, lo: float,
                   hi: float, generator: torch.Generator | None, steps: _NormSteps) -> tuple[Tensor, Tensor]:
    """The query loop of Alg. 1 for one restart, the same for both norms.

    Each iteration draws one window for all still-robust samples, queries them once and keeps a
    candidate only where it lowers the margin; samples with margin <= 0 are no longer queried.

    Args:
        margin_fn: ``(points, index) -> margin`` of ``points`` for the samples ``x[index]``.
        x: clean inputs ``(B, C, H, W)``.
        eps: radius.
        n_queries: iterations after the initial query.
        p_init: initial fraction of features changed (see :func:`p_selection`).
        lo: lower bound of valid inputs.
        hi: upper bound of valid inputs.
        generator: the only source of randomness.
        steps: the norm's initialisation and proposal.

    Returns:
        The lowest-margin point per sample (the first fooling one once fooled) and its margin.
    """
    x_best = steps.init(x, eps, generator).clamp(lo, hi)
    margin_min = margin_fn(x_best, torch.arange(x.shape[0], device=x.device))
    for i in range(n_queries):
        todo = (margin_min > 0).nonzero().squeeze(1)
        if todo.numel() == 0:
            break
        p = p_selection(p_init, i, n_queries)
        x_new = steps.propose(x[todo], x_best[todo], eps, p, generator).clamp(lo, hi)
        m = margin_fn(x_new, todo)
        improved = m < margin_min[todo]
        margin_min[todo[improved]] = m[improved]
        x_best[todo[improved]] = x_new[improved]
    return x_best, margin_min


def _check_square_arguments(n_queries: int, n_restarts: int, p_init: float) -> None:
    """The checks both :func:`square_attack` and :class:`Square` need, in one place."""
    check_int("n_queries", n_queries, minimum=0)
    check_int("n_restarts", n_restarts, minimum=1)
    check_number("p_init", p_init, 0.0, 1.0, low_open=True)


def square_attack(
    logits_fn: LogitsFn,
    x: Tensor,
    target: Tensor,
    eps: float = 8 / 255,
    norm: Norm = "linf",
    n_queries: int = 5000,
    p_init: float = 0.8,
    n_restarts: int = 1,
    bounds: Bounds = (0.0, 1.0),
    generator: torch.Generator | None = None,
) -> Tensor:
    """Square attack on ``(B, C, H, W)`` images (Andriushchenko et al. 2020, Alg. 1 and 3).

    Args:
        logits_fn: the model's class logits; only its outputs are used.
        x: clean inputs in ``bounds``.
        target: true labels ``(B,)``.
        eps: radius.
        norm: ``"linf"`` or ``"l2"``.
        n_queries: iterations (one query per still-robust sample each), 5000 in AutoAttack.
        p_init: initial fraction of features changed per square (0.8 in AutoAttack).
        n_restarts: independent runs; a restart only attacks samples not fooled yet.
        bounds: valid input range.
        generator: the only source of randomness.

    Returns:
        Adversarial inputs: for fooled samples the first point found, otherwise the point of
        lowest margin in the last restart.
    """
    lo, hi = _check_bounds(bounds)
    if norm not in ("linf", "l2"):
        raise InvalidArgumentError(f"norm must be 'linf' or 'l2', got {norm!r}")
    if x.dim() != 4:
        raise InvalidArgumentError(f"square_attack needs (B, C, H, W) images, got shape {tuple(x.shape)}")
    _check_square_arguments(n_queries, n_restarts, p_init)
    _check_inputs(x, lo, hi)
    x = x.detach().clone()
    if eps <= 0 or x.shape[0] == 0:
        return x
    # no_grad must come last: inference_mode(False) turns grad mode back on.
    with torch.inference_mode(False), torch.no_grad():
        x_adv = x.clone()
        margin_clean = margin(logits_fn(x), target)
        todo = (margin_clean > 0).nonzero().squeeze(1)
        steps = _NORM_STEPS[norm]
        for _ in range(n_restarts):
            if todo.numel() == 0:
                break
            x_sub, t_sub = x[todo], target[todo]

            def margin_fn(points: Tensor, index: Tensor, t=t_sub) -> Tensor:
                return margin(logits_fn(points), t[index])

            x_run, m_run = _random_search(margin_fn, x_sub, float(eps), n_queries, p_init, lo, hi, generator, steps)
            # Samples still robust take this restart's lowest-margin point (a later restart
            # replaces it); fooled samples drop out of todo and keep their first fooling point.
            x_adv[todo] = x_run
            todo = todo[m_run > 0]
    return x_adv


class Square(Attack):
    """Square attack as a config-friendly class (score-based: needs class logits).

    Callbacks call :meth:`perturb_logits` with the module's logits (``requires_logits``).

    Args:
        eps: radius (float or ``"8/255"``).
        norm: ``"linf"`` or ``"l2"``.
        n_queries: queries per sample and restart (5000 in AutoAttack).
        p_init: initial square size as a fraction of the features (0.8 in AutoAttack).
        n_restarts: restarts on the samples not fooled yet.
        bounds: valid input range.
        name: metric name override; defaults to ``square_linf_eps8`` etc.
    """

    kind = "square"
    requires_logits = True
    # Score-based: no gradient, so the "loss rises" sanity check does not apply.
    white_box = False

    def __init__(
        self,
        eps: float | str = "8/255",
        norm: Norm = "linf",
        n_queries: int = 5000,
        p_init: float = 0.8,
        n_restarts: int = 1,
        bounds: Bounds = (0.0, 1.0),
        name: str | None = None,
    ) -> None:
        super().__init__(eps=eps, norm=norm, bounds=bounds, name=name)
        _check_square_arguments(n_queries, n_restarts, p_init)
        self.n_queries = n_queries
        self.p_init = float(p_init)
        self.n_restarts = n_restarts

    def perturb_logits(self, logits_fn: LogitsFn, x: Tensor, target: Tensor,
                       generator: torch.Generator | None = None) -> Tensor:
        """Attack a classifier given its logits function and integer targets."""
        return square_attack(logits_fn, x, target, eps=self.eps, norm=self.norm, n_queries=self.n_queries,
                             p_init=self.p_init, n_restarts=self.n_restarts, bounds=self.bounds,
                             generator=generator)

    def __call__(self, loss_fn: LossFn, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        raise InvalidArgumentTypeError(
            "Square needs class logits: call perturb_logits(logits_fn, x, target), as the "
            "robust_lightning callbacks do")
