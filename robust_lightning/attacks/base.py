"""Config-friendly attack classes wrapping the functional core.

An :class:`Attack` holds its budget and schedule; calling it runs the attack on a loss
function: ``x_adv = attack(loss_fn, x, generator=g)``. Budgets accept ``"8/255"`` strings so
YAML configs read like papers.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod

import torch
from torch import Tensor
from typing_extensions import override

from robust_lightning._validation import check_bool_or_non_negative, check_int, check_non_negative
from robust_lightning.attacks.core import (
    NORMS,
    Bounds,
    LossFn,
    Norm,
    _check_bounds,
    eps_tag,
    fgsm,
    parse_budget,
    pgd,
)

__all__ = ["Attack", "FGSM", "NFGSM", "PGD"]


class Attack(ABC):
    """Base class: an attack with a fixed budget, usable from configs and callbacks.

    Args:
        eps: radius (float or ``"a/b"`` string), >= 0.
        norm: ``"linf"`` or ``"l2"``.
        bounds: valid input range.
        name: metric name override; defaults to ``<kind>_<norm>_eps<k>`` (see :meth:`name`).
    """

    kind: str = "attack"

    def __init__(
        self,
        eps: float | str = "8/255",
        norm: Norm = "linf",
        bounds: Bounds = (0.0, 1.0),
        name: str | None = None,
    ) -> None:
        self.eps = parse_budget(eps, "eps")
        if self.eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps!r}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        self.norm = norm
        # Checked here, not only when the attack first runs (possibly epochs into training).
        self.bounds = _check_bounds(bounds)
        self._name = name

    @property
    def name(self) -> str:
        """Metric-name fragment, e.g. ``pgd10_linf_eps8`` (docs/architecture.md, "Names users see")."""
        return self._name or f"{self.kind}_{self.norm}_{eps_tag(self.eps)}"

    def with_eps(self, eps: float | str) -> Attack:
        """A copy with another radius (step sizes stay as configured); used by eps sweeps."""
        value = parse_budget(eps, "eps")
        if value < 0:
            raise ValueError(f"eps must be >= 0, got {eps!r}")
        clone = copy.copy(self)
        clone.eps = value
        clone._name = None
        return clone

    @abstractmethod
    def __call__(
        self, loss_fn: LossFn, x: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """Return adversarial inputs for ``x`` maximising ``loss_fn`` within the budget."""

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


class PGD(Attack):
    """Projected gradient descent (Madry et al. 2018), L-inf or L2.

    Args:
        eps: radius; ``"8/255"`` is the CIFAR-10 L-inf standard.
        alpha: step size; ``"2/255"`` with 10 steps is the standard training recipe.
        steps: number of steps.
        norm: ``"linf"`` or ``"l2"``.
        random_start: ``True`` for a uniform start in the ball, a float for a Gaussian start
            of that std (TRADES), ``False`` to start at ``x``.
        bounds: valid input range.
        name: metric name override.
    """

    def __init__(
        self,
        eps: float | str = "8/255",
        alpha: float | str = "2/255",
        steps: int = 10,
        norm: Norm = "linf",
        random_start: bool | float = True,
        bounds: Bounds = (0.0, 1.0),
        name: str | None = None,
    ) -> None:
        super().__init__(eps=eps, norm=norm, bounds=bounds, name=name)
        self.alpha = parse_budget(alpha, "alpha")
        if self.alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {alpha!r}")
        check_int("steps", steps, minimum=0)
        check_bool_or_non_negative("random_start", random_start, "a noise std")
        self.steps = steps
        self.random_start = random_start

    @override
    @property
    def kind(self) -> str:  # type: ignore[override]
        return f"pgd{self.steps}"

    def __call__(
        self, loss_fn: LossFn, x: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        return pgd(loss_fn, x, eps=self.eps, alpha=self.alpha, steps=self.steps, norm=self.norm,
                   random_start=self.random_start, bounds=self.bounds, generator=generator)


class FGSM(Attack):
    """FGSM (Goodfellow et al. 2015) or, with ``random_start``, FGSM-RS (Wong et al. 2020).

    Args:
        eps: radius.
        random_start: uniform start in the ball; then ``alpha`` defaults to ``1.25 * eps``.
        alpha: step size; defaults to ``eps`` (plain) or ``1.25 * eps`` (random start).
        norm: ``"linf"`` or ``"l2"``.
        bounds: valid input range.
        name: metric name override.
    """

    def __init__(
        self,
        eps: float | str = "8/255",
        random_start: bool = False,
        alpha: float | str | None = None,
        norm: Norm = "linf",
        bounds: Bounds = (0.0, 1.0),
        name: str | None = None,
    ) -> None:
        super().__init__(eps=eps, norm=norm, bounds=bounds, name=name)
        self.random_start = bool(random_start)
        self.alpha = None if alpha is None else parse_budget(alpha, "alpha")
        if self.alpha is not None and self.alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {alpha!r}")

    @override
    @property
    def kind(self) -> str:  # type: ignore[override]
        return "fgsm_rs" if self.random_start else "fgsm"

    def __call__(
        self, loss_fn: LossFn, x: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        return fgsm(loss_fn, x, eps=self.eps, norm=self.norm, random_start=self.random_start,
                    alpha=self.alpha, bounds=self.bounds, generator=generator)


class NFGSM(Attack):
    """N-FGSM (de Jorge et al. 2022, "Make some noise", Alg. 1): one step, no projection.

    Start from ``x + U(-k*eps, k*eps)`` (``k = 2``: noise of magnitude ``2 eps``), take one
    signed-gradient step of size ``alpha = eps`` and clamp to the bounds only: the perturbation
    is *not* projected back onto the eps-ball, so it can reach ``(k + 1) * eps`` in L-inf.

    Defaults checked against pdejorge/N-FGSM ``train.py``: ``--unif 2.0`` (noise
    ``U(-2 eps, 2 eps)``), ``--clip -1`` (no projection), ``--alpha 8`` with ``--epsilon 8``, and
    ``experiments.sh`` sets ``--alpha`` equal to ``--epsilon`` for every CIFAR run (step = eps).
    As there, the noisy start is clamped to the input range before the gradient is taken
    (``attack_utils.clamp(eta, lower_limit - X, upper_limit - X)``). One difference: their model
    stays in train mode while attacked (BatchNorm batch statistics); our callbacks attack in
    ``model_mode="eval"`` unless told ``"train"``. L-inf only (the paper's setting).

    Args:
        eps: nominal radius the noise and step are scaled by.
        noise_scale: ``k``; the noise is uniform in ``[-k eps, k eps]``.
        alpha: step size; defaults to ``eps``.
        bounds: valid input range.
        name: metric name override.
    """

    kind = "n_fgsm"

    def __init__(self, eps: float | str = "8/255", noise_scale: float = 2.0,
                 alpha: float | str | None = None, bounds: Bounds = (0.0, 1.0),
                 name: str | None = None) -> None:
        super().__init__(eps=eps, norm="linf", bounds=bounds, name=name)
        self.noise_scale = check_non_negative("noise_scale", noise_scale)
        self.alpha = self.eps if alpha is None else parse_budget(alpha, "alpha")

    def __call__(
        self, loss_fn: LossFn, x: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        lo, hi = self.bounds
        with torch.inference_mode(False), torch.enable_grad():
            x = x.detach().clone() if x.is_inference() else x.detach()
            noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            start = (x + (2 * noise - 1) * (self.noise_scale * self.eps)).clamp(lo, hi)
            start.requires_grad_(True)
            (grad,) = torch.autograd.grad(loss_fn(start).sum(), start)
            return (start.detach() + self.alpha * grad.sign()).clamp(lo, hi)
