"""RCT-AF building blocks in pure torch: curvature-set activations, swapping, Hessian probes.

Paper: Yu, Su & Zhu, "Why the Maximum Second Derivative of Activations Matters for
Adversarial Robustness" (arXiv:2603.23860, 2026). Its claim (abstract): adversarial robustness
is non-monotonic in the activation's maximum curvature ``max|σ''|``; too little curvature limits
expressivity, too much inflates the *normalised Hessian-diagonal norm* of the loss (sharper
minima, worse robust generalisation); the best robustness sits at ``max|σ''|`` in [4, 10].

The paper's own family (RCT-AF, "recursive curvature-tunable", parameters alpha and beta) and
its code (github.com/YunruiYu/RCT-AF) were not available to us: the stored copy of
arxiv.org/html/2603.23860v1 we could search gave the abstract and the start of the introduction
only, and the code repository is not in the public-code index we searched.
:class:`CurvatureTunableActivation` is therefore **our construction**, a one-parameter
family in which ``max|σ''|`` is *set* directly and exactly:

    σ_κ(x) = g(β x) / β,    β = κ / M_g,    M_g = max_u |g''(u)|                  (1)

for a smooth rectifier ``g``. By the chain rule σ_κ''(x) = β g''(β x), so

    max_x |σ_κ''(x)| = β · M_g = κ                                              (2)

exactly, for every κ > 0. The first derivative keeps g's range (slopes 0 on the left and 1 on
the right, as ReLU), so κ changes only how sharp the bend is: κ → ∞ tends to ReLU (whose
σ'' is a Dirac at 0, i.e. ``max|σ''| = ∞``) and κ → 0 tends to the linear map x/2 (plus a
constant log(2)/β for softplus). The constants M_g, each attained at u = 0:

    softplus  g = log(1 + e^u),  g'' = s(1 - s) ≤ 1/4,  s = sigmoid(u)            (3)
    silu      g = u s(u),  g'' = s(1 - s)(2 - u tanh(u/2)) ≤ 2 s(1 - s) ≤ 1/2   (4)
              (u tanh(u/2) ≥ 0; where g'' < 0, |g''| ≤ (|u| - 2) e^{-|u|} ≤ e^{-3} < 1/2)
    gelu      g = u Φ(u),  g'' = φ(u)(2 - u²) ≤ 2 φ(0) = sqrt(2/π)                 (5)
              (where g'' < 0, |g''| ≤ 2 φ(2) ≈ 0.108 < sqrt(2/π))

so β = 4κ (softplus), 2κ (silu), κ sqrt(π/2) (gelu). :func:`max_second_derivative` checks
Eq. (2) numerically with autograd (double backward) on a fine grid.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robust_lightning._validation import check_int_at_least, is_number
from robust_lightning.attacks.core import attack_mode
from robust_lightning.errors import InvalidArgumentError

__all__ = [
    "ACTIVATION_BASES",
    "CURVATURE_CONSTANTS",
    "SWAPPABLE_ACTIVATIONS",
    "CurvatureTunableActivation",
    "hessian_diag_norm",
    "hutchinson_hessian_diagonal",
    "max_second_derivative",
    "swap_activations",
]

# M_g = max|g''| of each base at slope scale 1 (Eqs. 3-5 of this module's docstring).
CURVATURE_CONSTANTS: dict[str, float] = {
    "softplus": 0.25,
    "silu": 0.5,
    "gelu": math.sqrt(2.0 / math.pi),
}
ACTIVATION_BASES: tuple[str, ...] = tuple(CURVATURE_CONSTANTS)

# PyTorch's softplus returns x itself once beta * x exceeds this threshold; there
# log(1 + e^{βx})/β - x < e^{-20}/β, far below float32 resolution of x, and the linear branch
# avoids exp overflow for large β x.
_SOFTPLUS_THRESHOLD = 20.0


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # Half-precision inputs (autocast bf16/fp16) are evaluated in float32: β x may exceed the
    # fp16 range for large κ, and bf16's 8-bit mantissa would blur the bend the curvature sets.
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


class CurvatureTunableActivation(nn.Module):
    """A smooth rectifier whose maximum second derivative is exactly ``max_curvature``.

    ``σ(x) = g(β x) / β`` with ``β = max_curvature / M_g`` (module docstring, Eqs. 1-5; our
    construction, not the paper's RCT-AF recursion, which we could not read). Holds no
    parameters or buffers, so swapping it into a network leaves the ``state_dict`` unchanged.

    Half-precision inputs are computed in float32 and cast back, so the module is safe under
    ``torch.autocast`` (bf16/fp16) and for large ``β x`` (no overflow: softplus switches to its
    linear branch, sigmoid saturates to 0/1).

    Args:
        max_curvature: the target ``max_x |σ''(x)|`` (κ > 0, finite).
        base: the smooth rectifier ``g``: ``"silu"`` (``u·sigmoid(u)``), ``"softplus"``
            (``log(1+e^u)``) or ``"gelu"`` (``u·Φ(u)``, exact erf form).

    Raises:
        ValueError: naming ``max_curvature`` or ``base`` when invalid.

    Example:
        >>> act = CurvatureTunableActivation(8.0, base="silu")
        >>> round(max_second_derivative(act), 6)
        8.0
    """

    def __init__(self, max_curvature: float = 8.0, base: str = "silu") -> None:
        super().__init__()
        if not is_number(max_curvature):
            raise InvalidArgumentError(f"max_curvature must be a positive number, got {max_curvature!r}")
        if not math.isfinite(max_curvature) or max_curvature <= 0:
            raise ValueError(
                f"max_curvature must be finite and > 0, got {max_curvature!r}; use the plain "
                "ReLU (max|σ''| = ∞) for the piecewise-linear limit"
            )
        if base not in CURVATURE_CONSTANTS:
            raise ValueError(f"base must be one of {ACTIVATION_BASES}, got {base!r}")
        self.max_curvature = float(max_curvature)
        self.base = base
        # Eq. (2): max|σ''| = β M_g, so β = κ / M_g.
        self.beta = self.max_curvature / CURVATURE_CONSTANTS[base]

    def forward(self, x: Tensor) -> Tensor:
        dtype = _compute_dtype(x.dtype)
        z = x.to(dtype)
        beta = self.beta
        if self.base == "silu":
            # x·sigmoid(βx) == silu(βx)/β without the division's rounding.
            out = z * torch.sigmoid(beta * z)
        elif self.base == "softplus":
            out = F.softplus(z, beta=beta, threshold=_SOFTPLUS_THRESHOLD)
        else:
            # x·Φ(βx) == gelu(βx)/β, without overflow of βx·Φ(βx) for huge β; ndtr keeps the
            # left tail accurate where 1 + erf(u/√2) would cancel.
            out = z * torch.special.ndtr(beta * z)
        return out.to(x.dtype)

    def extra_repr(self) -> str:
        return f"max_curvature={self.max_curvature:g}, base={self.base!r}, beta={self.beta:g}"


def max_second_derivative(
    act: Callable[[Tensor], Tensor],
    lo: float = -10.0,
    hi: float = 10.0,
    num: int = 200_001,
    dtype: torch.dtype = torch.float64,
) -> float:
    """``max |σ''(x)|`` over a uniform grid on ``[lo, hi]``, by double backward.

    The activation must act elementwise. Autograd gives the exact second derivative at each
    grid point, so the only error is the grid's: with the default spacing of 1e-4 and the
    curvature peak of an activation of :class:`CurvatureTunableActivation` at x = 0 (on the
    grid), the value is exact to rounding. Piecewise-linear activations (ReLU) give 0: their
    σ'' is a Dirac at the kink, which autograd does not see.

    Args:
        act: elementwise activation (module or function).
        lo: grid start.
        hi: grid end (> lo).
        num: number of grid points (>= 2); an odd count over a symmetric range includes 0.
        dtype: grid dtype (float64 keeps rounding out of the measurement).

    Returns:
        The largest absolute second derivative on the grid.
    """
    if not (math.isfinite(lo) and math.isfinite(hi)) or not lo < hi:
        raise ValueError(f"lo and hi must be finite with lo < hi, got lo={lo!r}, hi={hi!r}")
    check_int_at_least("num", num, 2)
    with torch.enable_grad():
        x = torch.linspace(lo, hi, num, dtype=dtype, requires_grad=True)
        y = act(x)
        if y.shape != x.shape:
            raise ValueError(f"act must be elementwise: got shape {tuple(y.shape)} for input {tuple(x.shape)}")
        (first,) = torch.autograd.grad(y.sum(), x, create_graph=True)
        if not first.requires_grad:  # piecewise linear: the second derivative is 0 a.e.
            return 0.0
        (second,) = torch.autograd.grad(first.sum(), x, allow_unused=True)
    return 0.0 if second is None else float(second.abs().max())


# Rectifier-like activations: the ones a curvature-controlled rectifier stands in for. Tanh,
# Sigmoid and Hardsigmoid are left out on purpose: in modern networks they are mostly gates
# (squeeze-excitation, LSTM, attention), where a rectifier would change what the layer means.
SWAPPABLE_ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.RReLU,
    nn.ELU,
    nn.CELU,
    nn.SELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Softplus,
    nn.Hardswish,
    CurvatureTunableActivation,
)


def swap_activations(
    model: nn.Module,
    factory: Callable[[], nn.Module],
    types: Sequence[type[nn.Module]] | None = None,
) -> int:
    """Replace every activation module of ``model`` in place by ``factory()``.

    Works on any network whose non-linearities are ``nn.Module`` children (our ``SmallCNN``
    and ``PreActResNet18``, torchvision's ResNets, ...). Activations applied functionally
    (``F.relu(x)`` inside ``forward``) are invisible to module replacement; build such networks
    with activation modules instead (as ``robust_lightning.nn`` does).

    A module registered in several places (torchvision's ``BasicBlock`` registers one ``relu``
    and calls it twice; a shared instance may also be registered twice) is replaced by a single
    new module everywhere it appears, so sharing is preserved. ``PReLU``'s slope parameters
    disappear with it (the ``state_dict`` changes); every other listed type has no state.

    Args:
        model: the network, modified in place.
        factory: builds one replacement module (called once per distinct module replaced),
            e.g. ``functools.partial(CurvatureTunableActivation, 8.0, "silu")``.
        types: module classes to replace; defaults to :data:`SWAPPABLE_ACTIVATIONS`
            (rectifier-like activations, not gating sigmoids/tanh).

    Returns:
        The number of distinct activation modules replaced.

    Raises:
        TypeError: when ``model`` is not an ``nn.Module`` or ``factory()`` does not build one.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not callable(factory):
        raise TypeError(f"factory must be callable (e.g. a class or functools.partial), got {factory!r}")
    targets = tuple(types) if types is not None else SWAPPABLE_ACTIVATIONS
    if isinstance(model, targets):
        raise ValueError("model is itself an activation; swap it by building a new module instead")
    replacements: dict[int, nn.Module] = {}
    # Collect first, then replace: mutating _modules while iterating modules() is unsafe.
    # ``_modules`` rather than ``named_children()``, which skips a child registered twice
    # under one parent (it deduplicates), so that second slot would keep the old module.
    slots = [(parent, name, child) for parent in model.modules()
             for name, child in parent._modules.items() if isinstance(child, targets)]
    for parent, name, child in slots:
        new = replacements.get(id(child))
        if new is None:
            new = factory()
            if not isinstance(new, nn.Module):
                raise TypeError(f"factory must return an nn.Module, got {type(new).__name__}")
            replacements[id(child)] = new
        setattr(parent, name, new)
    return len(replacements)


# -- normalised Hessian-diagonal norm (Hutchinson) ----------------------------------------

LossFn = Callable[[nn.Module, Any], Tensor]


def _cross_entropy(module: nn.Module, batch: Any) -> Tensor:
    x, y = batch[0], batch[1]
    return F.cross_entropy(module(x).float(), y)


def _rademacher(like: Tensor, generator: torch.Generator | None) -> Tensor:
    bits = torch.randint(0, 2, like.shape, generator=generator, device=like.device)
    return (2 * bits - 1).to(like.dtype)


def hutchinson_hessian_diagonal(
    module: nn.Module,
    batch: Any,
    loss_fn: LossFn | None = None,
    num_probes: int = 16,
    generator: torch.Generator | None = None,
    params: Iterable[Tensor] | None = None,
) -> list[Tensor]:
    """Hutchinson's estimate of the diagonal of the loss Hessian w.r.t. the parameters.

    ``diag(H) = E_z[z ⊙ H z]`` for Rademacher probes ``z`` (Bekas, Kokiopoulou & Saad 2007):
    the off-diagonal terms ``H_ij z_i z_j`` average to zero and ``z_i² = 1``. Each ``H z`` is a
    Hessian-vector product by double backward (Pearlmutter 1994), so H is never formed. For a
    diagonal H the estimate is exact with a single probe.

    The module runs in eval mode (BatchNorm uses running statistics, which are neither used
    from the batch nor updated, and dropout is off), then every mode flag is restored.

    Args:
        module: the network (parameters with ``requires_grad`` are the Hessian's variables).
        batch: passed to ``loss_fn``; by default ``(inputs, integer targets, ...)``.
        loss_fn: ``loss_fn(module, batch) -> scalar``; defaults to the mean cross-entropy.
        num_probes: number of Rademacher probes averaged (>= 1).
        generator: source of the probes (on the parameters' device); ``None`` uses the global RNG.
        params: the parameters to differentiate; defaults to every trainable parameter.

    Returns:
        One tensor per parameter, shaped like it, holding the estimated ``diag(H)`` entries.
    """
    check_int_at_least("num_probes", num_probes, 1)
    loss_fn = loss_fn or _cross_entropy
    with attack_mode(module, "eval", freeze_params=False), torch.enable_grad():
        variables = [p for p in (params if params is not None else module.parameters()) if p.requires_grad]
        if not variables:
            raise ValueError("module has no parameters with requires_grad=True to take the Hessian over")
        device = variables[0].device
        if generator is not None and torch.device(generator.device).type != device.type:
            raise ValueError(f"generator lives on {generator.device} but the parameters on {device}")
        loss = loss_fn(module, batch)
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            raise ValueError("loss_fn must return a scalar loss (use reduction='mean')")
        if not bool(torch.isfinite(loss)):
            raise FloatingPointError("the loss is NaN/inf; cannot estimate its Hessian")
        grads = torch.autograd.grad(loss, variables, create_graph=True, allow_unused=True)
        # Parameters the loss does not reach, or reaches only linearly, have a zero Hessian row.
        connected = [(i, g) for i, g in enumerate(grads) if g is not None and g.requires_grad]
        estimate = [torch.zeros_like(p) for p in variables]
        for probe in range(num_probes):
            zs = [_rademacher(variables[i], generator) for i, _ in connected]
            grad_dot_z = sum((g * z).sum() for (_, g), z in zip(connected, zs, strict=False))
            hzs = torch.autograd.grad(grad_dot_z, [variables[i] for i, _ in connected],
                                      retain_graph=probe < num_probes - 1, allow_unused=True)
            for (i, _), z, hz in zip(connected, zs, hzs, strict=False):
                if hz is not None:
                    estimate[i] += z * hz.detach()
    return [e / num_probes for e in estimate]


def hessian_diag_norm(
    module: nn.Module,
    batch: Any,
    loss_fn: LossFn | None = None,
    num_probes: int = 16,
    generator: torch.Generator | None = None,
    normalize: bool = True,
    params: Iterable[Tensor] | None = None,
) -> float:
    """Normalised norm of the loss Hessian's diagonal, ``||diag(H)||_2 / sqrt(P)``.

    The paper measures a "normalised Hessian diagonal norm" of the loss but its normalisation
    could not be read (abstract only). **Our reading**: the root-mean-square of the P diagonal
    entries, ``sqrt(sum_i H_ii² / P)``, so networks of different sizes compare on a
    per-parameter scale; ``normalize=False`` returns the plain ``||diag(H)||_2``. The diagonal
    is Hutchinson's estimate (:func:`hutchinson_hessian_diagonal`); its variance shrinks as
    ``1/num_probes``. Being a squared quantity, the RMS is biased upwards by the estimator's
    variance for few probes; compare values measured with the same ``num_probes``.

    For piecewise-linear activations (ReLU) autograd sees ``σ'' = 0`` almost everywhere, so the
    estimate holds only the Gauss-Newton-like part of the Hessian: the kinks' contribution
    (``σ''`` a Dirac at 0, the ``κ → ∞`` limit of this family) is invisible to it. A ReLU
    network's value is therefore not the end point of the curve measured over κ.

    Args:
        module: the network (run in eval mode, restored after).
        batch: passed to ``loss_fn``; by default ``(inputs, integer targets, ...)``.
        loss_fn: ``loss_fn(module, batch) -> scalar``; defaults to the mean cross-entropy.
        num_probes: Rademacher probes (>= 1).
        generator: source of the probes; pass a seeded one for reproducible values.
        normalize: divide by ``sqrt(P)`` (P = number of parameters entries).
        params: parameters to differentiate; defaults to every trainable parameter.

    Returns:
        The (normalised) norm as a Python float.
    """
    diagonal = hutchinson_hessian_diagonal(module, batch, loss_fn, num_probes, generator, params)
    flat = torch.cat([d.reshape(-1).double() for d in diagonal])
    norm = flat.norm()
    if normalize:
        norm = norm / math.sqrt(flat.numel())
    return float(norm)
