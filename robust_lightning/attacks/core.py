"""Functional attack core: :func:`pgd`, :func:`fgsm` and the context they run models in.

Contract (docs/architecture.md, "Attack core"): ``loss_fn(x) -> (B,)`` per-sample loss to maximise;
gradients are taken with :func:`torch.autograd.grad` w.r.t. the input only; the
step/projection/clamp runs through :mod:`robust_lightning.ops`; device and dtype come from
``x``; randomness only from the given :class:`torch.Generator`.

References:
    Madry et al. 2018, "Towards Deep Learning Models Resistant to Adversarial Attacks",
    Eq. (2) (PGD on the negative loss) and Sec. 2.1 (random start).
    Goodfellow et al. 2015, "Explaining and Harnessing Adversarial Examples" (FGSM).
    Wong et al. 2020, "Fast is better than free" (FGSM with random init, alpha = 1.25 eps).
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable, Iterator
from typing import Literal

import torch
from torch import Tensor, nn

from robust_lightning import ops
from robust_lightning._validation import check_bool_or_non_negative, check_int, is_number
from robust_lightning.errors import InvalidArgumentError

__all__ = [
    "Bounds",
    "LossFn",
    "Norm",
    "attack_mode",
    "eps_tag",
    "fgsm",
    "parse_budget",
    "pgd",
]

Norm = Literal["linf", "l2"]
Bounds = tuple[float, float]
LossFn = Callable[[Tensor], Tensor]
NORMS: tuple[str, ...] = ("linf", "l2")

# Inputs a hair outside the bounds (float rounding in resizing/normalising pipelines) are
# accepted and clamped; anything further out is a data bug worth an error.
_BOUNDS_TOLERANCE = 1e-5
_FRACTION = re.compile(r"^\s*([-+]?)\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*/\s*([0-9]*\.?[0-9]+)\s*$")


def parse_budget(value: float | int | str, name: str) -> float:
    """Read an attack budget given as a number or a fraction string such as ``"8/255"``.

    Config files cannot hold ``8/255`` as a float literal, so budgets accept the fraction
    form; it is parsed with a regular expression, never evaluated.

    Raises:
        InvalidArgumentError: naming ``name`` when the value is neither a number nor ``"a/b"``,
            is not finite, or is negative (budgets are radii and step sizes: >= 0).
    """
    parsed: float | None = None
    if is_number(value):  # bool is not a budget: it falls through to the error below
        parsed = float(value)
    elif isinstance(value, str):
        match = _FRACTION.match(value)
        if match:
            denominator = float(match.group(3))
            if denominator == 0:
                raise InvalidArgumentError(f"{name}={value!r} divides by zero")
            parsed = float(match.group(2)) / denominator * (-1.0 if match.group(1) == "-" else 1.0)
        else:
            try:
                parsed = float(value)
            except ValueError:
                pass
    if parsed is None:
        raise InvalidArgumentError(f"{name} must be a number or a fraction like '8/255', got {value!r}")
    if not math.isfinite(parsed):
        raise InvalidArgumentError(f"{name} must be finite, got {value!r}")
    if parsed < 0:
        raise InvalidArgumentError(f"{name} must be >= 0 (attack budgets are non-negative), got {value!r}")
    return parsed


def eps_tag(eps: float) -> str:
    """The ``eps<k>`` part of metric names: ``8/255 -> "eps8"``, ``0.1 -> "eps0.1"``.

    A budget with a short decimal form (0.1, 0.2, 0.5, 1.0) is named by it; other budgets that
    are whole multiples of 1/255 (the image-robustness convention) are named in 1/255 units;
    any other budget by its decimal value. (0.2 and an L2 radius of 1.0 are whole multiples of
    1/255 too, but "eps51" / "eps255" would misname them.)
    """
    eps = float(eps)
    short = f"{eps:.3g}"
    if float(short) == eps:
        return f"eps{short}"
    in_255 = eps * 255.0
    if abs(in_255 - round(in_255)) < 1e-6:
        return f"eps{int(round(in_255))}"
    return f"eps{eps:.6g}"


def _batchnorm_modules(module: nn.Module) -> list[nn.modules.batchnorm._NormBase]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._NormBase)]


@contextlib.contextmanager
def attack_mode(
    module: nn.Module, mode: Literal["eval", "train"] = "eval", freeze_params: bool = True
) -> Iterator[nn.Module]:
    """Run ``module`` for crafting attacks, then restore it exactly.

    * ``mode="eval"``: BatchNorm uses running statistics and dropout is off.
    * ``mode="train"``: the module stays in training mode (Madry et al.'s original recipe), but
      BatchNorm running statistics and counters are restored afterwards, so the attack's
      forward passes never leak into the statistics used at test time.
    * ``freeze_params``: parameters get ``requires_grad=False`` for the duration, so autograd
      neither computes weight gradients nor saves activations only weight gradients need.

    Every submodule's own ``training`` flag and every parameter's ``requires_grad`` flag is
    restored, so mixed states (a frozen backbone in eval mode, say) survive an attack.
    """
    if mode not in ("eval", "train"):
        raise ValueError(f"mode must be 'eval' or 'train', got {mode!r}")
    training_flags = [(m, m.training) for m in module.modules()]
    grad_flags = [(p, p.requires_grad) for p in module.parameters()]
    bn_snapshot: list[tuple[Tensor, Tensor]] = []
    if mode == "train":
        for bn in _batchnorm_modules(module):
            for buffer in (bn.running_mean, bn.running_var, bn.num_batches_tracked):
                if buffer is not None:
                    bn_snapshot.append((buffer, buffer.detach().clone()))
    try:
        module.train(mode == "train")
        if freeze_params:
            for p, _ in grad_flags:
                p.requires_grad_(False)
        yield module
    finally:
        for m, flag in training_flags:
            m.training = flag
        for p, flag in grad_flags:
            p.requires_grad_(flag)
        with torch.no_grad():
            for buffer, saved in bn_snapshot:
                buffer.copy_(saved)


def _check_bounds(bounds: Bounds) -> tuple[float, float]:
    try:
        lo, hi = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise ValueError(f"bounds must be a pair (lo, hi) of numbers, got {bounds!r}") from None
    if not lo < hi:
        raise ValueError(f"bounds must satisfy lo < hi, got {bounds!r}")
    return lo, hi


def _check_inputs(x: Tensor, lo: float, hi: float) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"x must be a floating-point tensor in [{lo}, {hi}], got dtype {x.dtype}; convert "
            "images with x.float() / 255 first"
        )
    if x.dim() == 0 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty batch (B, ...), got shape {tuple(x.shape)}")
    x_min_tensor, x_max_tensor = torch.aminmax(x.detach())
    x_min, x_max = float(x_min_tensor), float(x_max_tensor)
    if not (math.isfinite(x_min) and math.isfinite(x_max)):
        raise ValueError("x contains NaN or inf values")
    if x_min < lo - _BOUNDS_TOLERANCE or x_max > hi + _BOUNDS_TOLERANCE:
        raise ValueError(
            f"x has values in [{x_min:.4g}, {x_max:.4g}], outside bounds ({lo}, {hi}). Attacks "
            "expect unnormalised inputs (images in [0, 1]); put normalisation inside the model "
            "(robust_lightning.nn.Normalize) or pass the right bounds"
        )


def _check_eps(eps: float | Tensor, x: Tensor) -> Tensor:
    """Validated eps as a scalar or ``(B,)`` tensor on x's device, in x's opmath dtype."""
    opmath = torch.float64 if x.dtype == torch.float64 else torch.float32
    if isinstance(eps, Tensor):
        if eps.dim() not in (0, 1) or (eps.dim() == 1 and eps.shape[0] != x.shape[0]):
            raise ValueError(
                f"eps must be a float, a scalar tensor or a per-sample tensor of shape "
                f"({x.shape[0]},), got shape {tuple(eps.shape)}"
            )
        eps_t = eps.detach().to(device=x.device, dtype=opmath)
    else:
        eps_t = torch.tensor(float(eps), device=x.device, dtype=opmath)
    if bool((eps_t < 0).any()) or not bool(torch.isfinite(eps_t).all()):
        raise ValueError(f"eps must be finite and >= 0, got {eps!r}")
    return eps_t


def _broadcast(per_sample: Tensor, like: Tensor) -> Tensor:
    if per_sample.dim() == 0:
        return per_sample
    return per_sample.reshape(-1, *([1] * (like.dim() - 1)))


def _random_start(
    x: Tensor, eps: Tensor, norm: str, generator: torch.Generator | None, start: bool | float
) -> Tensor:
    eps_b = _broadcast(eps, x).to(x.dtype)
    if not isinstance(start, bool):
        # A float start is the std of a small Gaussian around x (TRADES' 0.001 * N(0, I)).
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return x + float(start) * noise
    if norm == "linf":
        noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return x + (2 * noise - 1) * eps_b
    # L2: a uniformly random direction scaled to a uniform fraction of the radius.
    direction = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    norms = direction.flatten(1).norm(dim=1).clamp_min(ops.L2_NORM_FLOOR)
    radius = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype)
    return x + direction * _broadcast(radius / norms, x) * eps_b


def _project(x_adv: Tensor, x: Tensor, eps: Tensor, norm: str, lo: float, hi: float) -> Tensor:
    """Project an arbitrary starting point into the eps-ball and the bounds."""
    delta = x_adv - x
    if norm == "linf":
        eps_b = _broadcast(eps, x).to(x.dtype)
        delta = torch.maximum(torch.minimum(delta, eps_b), -eps_b)
    else:
        norms = delta.flatten(1).norm(dim=1)
        scale = torch.clamp(eps.to(x.dtype) / (norms + ops.L2_NORM_FLOOR), max=1.0)
        delta = delta * _broadcast(scale, x)
    return (x + delta).clamp(lo, hi)


def _evaluate_loss(loss_fn: LossFn, x_adv: Tensor, batch_size: int, check: bool) -> Tensor:
    loss = loss_fn(x_adv)
    if check:
        if not isinstance(loss, Tensor) or loss.shape != (batch_size,):
            shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
            raise ValueError(
                f"loss_fn must return a per-sample loss of shape ({batch_size},), got {shape}; "
                "use reduction='none' in the loss"
            )
        if not loss.requires_grad:
            raise ValueError(
                "loss_fn returned a loss that does not depend on its input (no gradient); "
                "make sure the loss is computed from the tensor passed to loss_fn"
            )
        if not bool(torch.isfinite(loss).all()):
            raise FloatingPointError(
                "loss_fn returned NaN or inf on the attack's starting point; check the model "
                "outputs and the loss (e.g. log of zero probabilities)"
            )
    return loss


def pgd(
    loss_fn: LossFn,
    x: Tensor,
    eps: float | Tensor = 8 / 255,
    alpha: float = 2 / 255,
    steps: int = 10,
    norm: Norm = "linf",
    random_start: bool | float = True,
    bounds: Bounds = (0.0, 1.0),
    generator: torch.Generator | None = None,
    x_init: Tensor | None = None,
) -> Tensor:
    """Projected gradient ascent on ``loss_fn`` inside an eps-ball around ``x``.

    Implements Madry et al. 2018, Eq. (2): ``x_{t+1} = Proj_{B(x, eps)}(x_t + alpha *
    step(grad))`` with ``step = sign`` for L-inf and the L2-normalised gradient for L2, then a
    clamp into ``bounds``.

    Args:
        loss_fn: maps a batch ``(B, ...)`` to the per-sample loss ``(B,)`` to maximise.
        x: clean batch in ``bounds``; its device and dtype are the attack's.
        eps: radius, a float or a per-sample tensor ``(B,)``.
        alpha: step size (> 0).
        steps: number of gradient steps (0 returns ``x`` unchanged).
        norm: ``"linf"`` or ``"l2"``.
        random_start: ``True`` starts from a uniform sample of the ball (L-inf) or a random
            direction at a uniform radius (L2), as in Madry et al. Sec. 2.1; a float ``s`` starts
            from ``x + s * N(0, I)`` (TRADES uses 0.001, where ``x`` itself has zero gradient).
        bounds: valid input range ``(lo, hi)``.
        generator: the only source of randomness; must live on ``x``'s device.
        x_init: explicit starting point (projected into the ball); overrides ``random_start``.

    Returns:
        The adversarial batch, detached, same shape/dtype/device as ``x``.

    Raises:
        ValueError / TypeError: on invalid arguments, naming the argument.
        FloatingPointError: when the loss or the iterate becomes NaN/inf.
    """
    lo, hi = _check_bounds(bounds)
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    check_int("steps", steps, minimum=0)
    check_bool_or_non_negative("random_start", random_start, "a noise std")
    alpha = float(alpha)
    if not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha!r}")
    if generator is not None and torch.device(generator.device).type != x.device.type:
        raise ValueError(
            f"generator lives on {generator.device} but x is on {x.device}; create it with "
            f"torch.Generator(device=x.device)"
        )
    _check_inputs(x, lo, hi)
    eps_t = _check_eps(eps, x)

    # Lightning runs validation under inference_mode; attacks need autograd, and tensors
    # created in inference mode cannot be saved for backward, so work on normal clones.
    with torch.inference_mode(False), torch.enable_grad():
        x = x.detach().clone() if x.is_inference() else x.detach()
        if steps == 0 or not bool((eps_t > 0).any()):
            return x.clone()
        if x_init is not None:
            if x_init.shape != x.shape:
                raise ValueError(f"x_init must have x's shape {tuple(x.shape)}, got {tuple(x_init.shape)}")
            x_adv = _project(x_init.detach().to(x.dtype).clone(), x, eps_t, norm, lo, hi)
        elif random_start is not False and random_start != 0:
            start = _random_start(x, eps_t, norm, generator, random_start)
            x_adv = _project(start, x, eps_t, norm, lo, hi)
        else:
            x_adv = x.clone()
        step_ = ops.linf_step_ if norm == "linf" else ops.l2_step_
        # sign(NaN) == 0, so a loss turning NaN mid-attack would silently freeze an L-inf
        # attack; non-finite losses/gradients are recorded on device and checked once at the end.
        non_finite = torch.zeros((), dtype=torch.bool, device=x.device)
        for step in range(steps):
            x_adv.requires_grad_(True)
            loss = _evaluate_loss(loss_fn, x_adv, x.shape[0], check=step == 0)
            (grad,) = torch.autograd.grad(loss.sum(), x_adv, allow_unused=True)
            if grad is None:
                # The loss requires grad only through parameters (e.g. loss_fn detaches x).
                raise ValueError(
                    "loss_fn returned a loss that does not depend on its input (no gradient); "
                    "make sure the loss is computed from the tensor passed to loss_fn"
                )
            non_finite = non_finite | ~torch.isfinite(loss.detach()).all() | ~torch.isfinite(grad).all()
            x_adv = x_adv.detach()
            step_(x_adv, grad, x, eps_t, alpha, lo, hi)
        if bool(non_finite) or not bool(torch.isfinite(x_adv).all()):
            raise FloatingPointError(
                "the attack produced NaN/inf inputs: the loss or its gradient became non-finite "
                "during the attack; check the model and loss for numerical issues"
            )
        return x_adv


def fgsm(
    loss_fn: LossFn,
    x: Tensor,
    eps: float | Tensor = 8 / 255,
    norm: Norm = "linf",
    random_start: bool = False,
    alpha: float | None = None,
    bounds: Bounds = (0.0, 1.0),
    generator: torch.Generator | None = None,
) -> Tensor:
    """Fast gradient (sign) method: one step of :func:`pgd`.

    Without random start this is Goodfellow et al.'s FGSM (alpha = eps). With
    ``random_start=True`` it is Wong et al. 2020's FGSM-RS: a uniform start in the eps-ball and
    ``alpha = 1.25 * eps`` (their Sec. 4 choice), then projection back onto the ball.

    For a per-sample ``eps`` the step uses ``max(eps)`` and the projection clips each sample
    to its own radius, which without random start equals a step of each sample's eps.
    """
    if alpha is None:
        eps_max = float(eps.max()) if isinstance(eps, Tensor) and eps.numel() else float(eps)
        alpha = (1.25 if random_start else 1.0) * eps_max
        if alpha <= 0:
            # eps == 0 returns x unchanged inside pgd and a negative eps is reported by
            # pgd's eps check; a placeholder step keeps the alpha check from masking either.
            alpha = 1.0
    return pgd(loss_fn, x, eps=eps, alpha=alpha, steps=1, norm=norm, random_start=random_start,
               bounds=bounds, generator=generator)
