"""Python face of the fused attack ops.

The attack core never touches tensors' step/projection arithmetic directly: it calls
:func:`linf_step_`, :func:`l2_step_` and :func:`laplacian_sharpen` here. Each has a pure
PyTorch reference implementation below; the C++/CUDA extension in ``csrc/`` registers the
same ops under ``torch.ops.robust_lightning`` and, once built, is dispatched to instead.

Numerics contract shared by reference and native kernels: arithmetic runs in the "opmath"
type (fp32 for fp16/bf16/fp32, fp64 for fp64) and the result is rounded once into the
output dtype, so fp32/fp64 L-inf results are bitwise identical between implementations.

Choosing the implementation:

* by default the native ops run whenever ``robust_lightning._C`` imports and has kernels for
  the tensors' device; otherwise the reference runs and a one-time warning says how to build;
* ``ROBUST_LIGHTNING_OPS=native`` makes a missing extension (or device kernel) an error,
  ``ROBUST_LIGHTNING_OPS=reference`` always runs the reference. The variable is read on every
  call, so it can be changed at run time.

The extension is never built at import time; it is built when the package is installed from
source (``pip install --no-build-isolation .``, ``make build``), see ``setup.py``.
"""

from __future__ import annotations

import os
import warnings

import torch
from torch import Tensor

from robust_lightning._validation import is_number
from robust_lightning.errors import InvalidArgumentTypeError

__all__ = ["backend", "l2_step_", "laplacian_sharpen", "linf_step_"]

# Added to the L2 norms so an all-zero gradient (or perturbation) does not divide by zero.
L2_NORM_FLOOR = 1e-12

#: Environment variable that forces an implementation: "native" or "reference".
BACKEND_ENV = "ROBUST_LIGHTNING_OPS"
_BUILD_HINT = ("build it with a C++ compiler: `pip install --no-build-isolation robust-lightning` "
               "(or `make build` in a checkout)")

try:
    # Importing the shared object runs its TORCH_LIBRARY registrations.
    from robust_lightning import _C
except ImportError as _err:  # not built, or built against another torch
    _C = None
    _C_IMPORT_ERROR: str | None = f"{type(_err).__name__}: {_err}"
else:
    _C_IMPORT_ERROR = None

_OP_NAMES = ("linf_step_", "l2_step_", "linf_step", "l2_step", "laplacian_sharpen")


def _opmath_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _per_sample(eps: Tensor, like: Tensor) -> Tensor:
    """Broadcast a scalar or ``(B,)`` eps against ``like`` of shape ``(B, ...)``."""
    if eps.dim() == 0:
        return eps
    return eps.reshape(eps.shape[0], *([1] * (like.dim() - 1)))


def _reference_linf_step_(
    x_adv: Tensor, grad: Tensor, x_clean: Tensor, eps: Tensor, alpha: float, lo: float, hi: float
) -> Tensor:
    opmath = _opmath_dtype(x_adv.dtype)
    eps_b = _per_sample(eps.to(opmath), x_adv)
    clean = x_clean.to(opmath)
    stepped = x_adv.to(opmath) + alpha * torch.sign(grad.to(opmath))
    projected = torch.minimum(torch.maximum(stepped, clean - eps_b), clean + eps_b)
    x_adv.copy_(projected.clamp_(lo, hi))
    return x_adv


def _reference_l2_step_(
    x_adv: Tensor, grad: Tensor, x_clean: Tensor, eps: Tensor, alpha: float, lo: float, hi: float
) -> Tensor:
    opmath = _opmath_dtype(x_adv.dtype)
    batch = x_adv.shape[0]
    eps_b = _per_sample(eps.to(opmath), x_adv)
    g = grad.to(opmath)
    g_norm = g.reshape(batch, -1).norm(p=2, dim=1).reshape(batch, *([1] * (g.dim() - 1)))
    clean = x_clean.to(opmath)
    delta = x_adv.to(opmath) + alpha * g / (g_norm + L2_NORM_FLOOR) - clean
    d_norm = delta.reshape(batch, -1).norm(p=2, dim=1).reshape(g_norm.shape)
    scale = torch.clamp(eps_b / (d_norm + L2_NORM_FLOOR), max=1.0)
    x_adv.copy_((clean + delta * scale).clamp_(lo, hi))
    return x_adv


def _laplacian(xf: Tensor) -> Tensor:
    """Depthwise 4-neighbour Laplacian of ``(..., H, W)`` with replicate padding."""
    padded = torch.nn.functional.pad(xf, (1, 1, 1, 1), mode="replicate")
    return (
        padded[..., :-2, 1:-1]
        + padded[..., 2:, 1:-1]
        + padded[..., 1:-1, :-2]
        + padded[..., 1:-1, 2:]
        - 4.0 * xf
    )


def _reference_laplacian_sharpen(x: Tensor, strength: float) -> Tensor:
    """``clip(x - strength * lap(x), 0, 1)`` with a depthwise 3x3 Laplacian.

    The 4-neighbour kernel [[0,1,0],[1,-4,1],[0,1,0]] with replicate padding: a constant
    image stays constant, so borders do not get a spurious halo.
    """
    opmath = _opmath_dtype(x.dtype)
    xf = x.to(opmath)
    return (xf - strength * _laplacian(xf)).clamp_(0.0, 1.0).to(x.dtype)


# ---------------------------------------------------------------------------------------------
# Native registrations that live on the Python side: fake kernels (shape/dtype propagation for
# torch.compile and meta tensors) and the derivative of laplacian_sharpen.
# ---------------------------------------------------------------------------------------------

if _C is not None:

    def _fake_check_step(
        name: str, x_adv: Tensor, grad: Tensor, x_clean: Tensor, eps: Tensor
    ) -> None:
        # The same contract the C++ kernels enforce (csrc/attack_ops.cpp), with the same error
        # types, so a compiled graph fails at trace time rather than at run time.
        torch._check_value(
            x_adv.dim() >= 1, lambda: f"{name}: x_adv must have a leading batch dimension"
        )
        torch._check_value(
            grad.shape == x_adv.shape,
            lambda: f"{name}: grad must have the shape of x_adv {tuple(x_adv.shape)}, "
            f"got {tuple(grad.shape)}",
        )
        torch._check_value(
            x_clean.shape == x_adv.shape,
            lambda: f"{name}: x_clean must have the shape of x_adv {tuple(x_adv.shape)}, "
            f"got {tuple(x_clean.shape)}",
        )
        torch._check_type(
            grad.dtype == x_adv.dtype and x_clean.dtype == x_adv.dtype,
            lambda: f"{name}: grad and x_clean must have the dtype of x_adv ({x_adv.dtype})",
        )
        torch._check_value(
            eps.numel() == 1 or tuple(eps.shape) == (x_adv.shape[0],),
            lambda: f"{name}: eps must be a scalar tensor or have shape (B,), "
            f"got {tuple(eps.shape)}",
        )

    @torch.library.register_fake("robust_lightning::linf_step_")
    def _linf_step_inplace_fake(x_adv, grad, x_clean, eps, alpha, lo, hi):
        _fake_check_step("linf_step_", x_adv, grad, x_clean, eps)
        return x_adv

    @torch.library.register_fake("robust_lightning::l2_step_")
    def _l2_step_inplace_fake(x_adv, grad, x_clean, eps, alpha, lo, hi):
        _fake_check_step("l2_step_", x_adv, grad, x_clean, eps)
        return x_adv

    @torch.library.register_fake("robust_lightning::linf_step")
    def _linf_step_fake(x_adv, grad, x_clean, eps, alpha, lo, hi):
        _fake_check_step("linf_step", x_adv, grad, x_clean, eps)
        return torch.empty_like(x_adv)

    @torch.library.register_fake("robust_lightning::l2_step")
    def _l2_step_fake(x_adv, grad, x_clean, eps, alpha, lo, hi):
        _fake_check_step("l2_step", x_adv, grad, x_clean, eps)
        return torch.empty_like(x_adv)

    @torch.library.register_fake("robust_lightning::laplacian_sharpen")
    def _laplacian_sharpen_fake(x, strength):
        torch._check_value(
            x.dim() == 4,
            lambda: f"laplacian_sharpen: x must be a (B, C, H, W) tensor, got {tuple(x.shape)}",
        )
        return torch.empty_like(x, memory_format=torch.contiguous_format)

    def _sharpen_setup_context(ctx, inputs, output):
        x, strength = inputs
        ctx.save_for_backward(x)
        ctx.strength = strength

    def _sharpen_backward(ctx, grad_out):
        # y = clip(p, 0, 1) with p = x - s L x. The replicate-padded 4-neighbour Laplacian is
        # self-adjoint (a border pixel that stands in for its missing neighbour receives that
        # neighbour's share back), so dy/dx^T v = (I - s L)(v * [0 <= p <= 1]); the mask is
        # torch.clamp's, which passes gradient at the bounds. Written with differentiable ops,
        # so double backward and torch.compile work.
        (x,) = ctx.saved_tensors
        opmath = _opmath_dtype(x.dtype)
        xf = x.to(opmath)
        pre_clip = xf - ctx.strength * _laplacian(xf)
        masked = torch.where(
            (pre_clip >= 0.0) & (pre_clip <= 1.0), grad_out.to(opmath), torch.zeros_like(xf)
        )
        grad_x = masked - ctx.strength * _laplacian(masked)
        return grad_x.to(x.dtype), None

    torch.library.register_autograd(
        "robust_lightning::laplacian_sharpen",
        _sharpen_backward,
        setup_context=_sharpen_setup_context,
    )

    # Device types the extension serves: the ones it has kernels for, plus meta (fake kernels).
    _NATIVE_DEVICE_TYPES = frozenset(
        ["meta"]
        + [
            device_type
            for device_type, key in (("cpu", "CPU"), ("cuda", "CUDA"))
            if torch._C._dispatch_has_kernel_for_dispatch_key("robust_lightning::linf_step_", key)
        ]
    )
else:
    _NATIVE_DEVICE_TYPES = frozenset()

# ---------------------------------------------------------------------------------------------
# Dispatch
# ---------------------------------------------------------------------------------------------

_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=4)


def _forced_backend() -> str | None:
    """The backend ``ROBUST_LIGHTNING_OPS`` asks for, or None when it is unset/empty."""
    value = os.environ.get(BACKEND_ENV, "")
    choice = value.strip().lower()
    if choice == "":
        return None
    if choice not in ("native", "reference"):
        raise ValueError(
            f"{BACKEND_ENV}={value!r} is not a valid setting; use 'native', 'reference', "
            "or leave it unset to pick native when it is built"
        )
    return choice


def _missing_extension_message() -> str:
    return (
        f"robust_lightning._C is not available ({_C_IMPORT_ERROR}); {_BUILD_HINT} "
        "(with the same torch that imports it)"
    )


def backend() -> str:
    """Name of the implementation the ops dispatch to: ``"native"`` or ``"reference"``.

    Returns:
        ``"native"`` when the compiled extension is loaded (or forced with
        ``ROBUST_LIGHTNING_OPS=native``), else ``"reference"``. Native is per device: tensors
        on a device the extension has no kernels for still run the reference (with a warning).

    Raises:
        RuntimeError: ``ROBUST_LIGHTNING_OPS=native`` but the extension is not built.
        ValueError: ``ROBUST_LIGHTNING_OPS`` holds anything but ``native``/``reference``.
    """
    forced = _forced_backend()
    if forced == "reference":
        return "reference"
    if _C is None:
        if forced == "native":
            raise RuntimeError(f"{BACKEND_ENV}=native, but {_missing_extension_message()}")
        return "reference"
    return "native"


def _use_native(x: Tensor) -> bool:
    """Whether to run the extension's kernel for ``x``; warns once per reason when not."""
    if backend() == "reference":
        if _C is None:
            _warn_once(
                "missing",
                f"{_missing_extension_message()}. Falling back to the pure-PyTorch reference "
                "ops, which give the same results but are several times slower.",
            )
        return False
    device_type = x.device.type
    if device_type in _NATIVE_DEVICE_TYPES:
        return True
    if _forced_backend() == "native":
        raise RuntimeError(
            f"{BACKEND_ENV}=native, but robust_lightning._C has no {device_type} kernels "
            f"(it was built for {sorted(_NATIVE_DEVICE_TYPES - {'meta'})}); rebuild it on a "
            f"machine with the matching toolkit, e.g. FORCE_CUDA=1 for CUDA"
        )
    _warn_once(
        f"device:{device_type}",
        f"robust_lightning._C has no {device_type} kernels; using the reference ops for "
        f"{device_type} tensors",
    )
    return False


_SUPPORTED_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def _as_eps_tensor(eps: Tensor | float, like: Tensor) -> Tensor:
    if isinstance(eps, Tensor):
        return eps
    if not is_number(eps):
        raise InvalidArgumentTypeError(f"eps must be a Tensor or a float, got {type(eps).__name__}")
    return torch.tensor(float(eps), dtype=_opmath_dtype(like.dtype), device=like.device)


def _check_step_args(name: str, x_adv: Tensor, grad: Tensor, x_clean: Tensor, eps: Tensor) -> None:
    """The native kernels' argument contract (csrc/attack_ops.cpp), enforced for both backends.

    Without it the reference would broadcast a mis-shaped ``grad`` or ``x_clean`` silently.
    Shape and device problems raise ValueError, dtype problems TypeError, naming the argument.
    """
    for arg, value in (("x_adv", x_adv), ("grad", grad), ("x_clean", x_clean)):
        if not isinstance(value, Tensor):
            raise TypeError(f"{name}: {arg} must be a Tensor, got {type(value).__name__}")
    if x_adv.dim() < 1:
        raise ValueError(f"{name}: x_adv must have a leading batch dimension, got a 0-dim tensor")
    if x_adv.dtype not in _SUPPORTED_DTYPES:
        raise TypeError(
            f"{name}: x_adv must be float32, float64, bfloat16 or float16, got {x_adv.dtype}"
        )
    for arg, value in (("grad", grad), ("x_clean", x_clean)):
        if value.shape != x_adv.shape:
            raise ValueError(
                f"{name}: {arg} must have the shape of x_adv {tuple(x_adv.shape)}, "
                f"got {tuple(value.shape)}"
            )
        if value.dtype != x_adv.dtype:
            raise TypeError(
                f"{name}: {arg} must have the dtype of x_adv ({x_adv.dtype}), got {value.dtype}"
            )
        if value.device != x_adv.device:
            raise ValueError(
                f"{name}: {arg} must be on the device of x_adv ({x_adv.device}), got {value.device}"
            )
    if not eps.is_floating_point():
        raise TypeError(f"{name}: eps must be a floating-point tensor, got {eps.dtype}")
    if not (eps.numel() == 1 or (eps.dim() == 1 and eps.shape[0] == x_adv.shape[0])):
        raise ValueError(
            f"{name}: eps must be a scalar tensor or have shape (B,) = ({x_adv.shape[0]},), "
            f"got shape {tuple(eps.shape)}"
        )
    if eps.device != x_adv.device and not (eps.device.type == "cpu" and eps.dim() == 0):
        raise ValueError(
            f"{name}: eps must be on the device of x_adv ({x_adv.device}) or be a 0-dim CPU "
            f"tensor, got a {eps.dim()}-dim tensor on {eps.device}"
        )


def linf_step_(
    x_adv: Tensor, grad: Tensor, x_clean: Tensor, eps: Tensor, alpha: float, lo: float, hi: float
) -> Tensor:
    """In place: ``x_adv = clamp(clamp(x_adv + alpha*sign(grad), x-eps, x+eps), lo, hi)``.

    Args:
        x_adv: current adversarial batch ``(B, ...)``, updated in place and returned.
        grad: gradient of the loss w.r.t. ``x_adv`` (same shape).
        x_clean: the clean batch the perturbation is measured from.
        eps: scalar tensor or per-sample ``(B,)`` L-inf radius.
        alpha: step size.
        lo: lower end of the valid input range.
        hi: upper end of the valid input range.

    Returns:
        ``x_adv`` itself. Strided (non-contiguous) ``x_adv`` is updated in place as well.

    Raises:
        ValueError: ``grad``/``x_clean`` shape or device differs from ``x_adv``'s, ``eps`` is
            neither a scalar nor ``(B,)``, or ``x_adv`` has no batch dimension.
        TypeError: ``x_adv`` is not a floating dtype the kernels support, or ``grad``/
            ``x_clean`` has another dtype than ``x_adv``, or ``eps`` is not floating point.
    """
    eps = _as_eps_tensor(eps, x_adv)
    _check_step_args("linf_step_", x_adv, grad, x_clean, eps)
    if _use_native(x_adv):
        return torch.ops.robust_lightning.linf_step_(x_adv, grad, x_clean, eps, alpha, lo, hi)
    return _reference_linf_step_(x_adv, grad, x_clean, eps, alpha, lo, hi)


def l2_step_(
    x_adv: Tensor, grad: Tensor, x_clean: Tensor, eps: Tensor, alpha: float, lo: float, hi: float
) -> Tensor:
    """In place: normalised-gradient step, projection onto the L2 ball, clamp to bounds.

    ``delta = x_adv + alpha * grad / (||grad|| + 1e-12) - x_clean``, scaled by
    ``min(eps / (||delta|| + 1e-12), 1)`` per sample, then ``x_adv = clamp(x_clean + delta,
    lo, hi)``. Arguments, return value and errors as in :func:`linf_step_`, with ``eps`` the L2
    radius.
    """
    eps = _as_eps_tensor(eps, x_adv)
    _check_step_args("l2_step_", x_adv, grad, x_clean, eps)
    if _use_native(x_adv):
        return torch.ops.robust_lightning.l2_step_(x_adv, grad, x_clean, eps, alpha, lo, hi)
    return _reference_l2_step_(x_adv, grad, x_clean, eps, alpha, lo, hi)


def laplacian_sharpen(x: Tensor, strength: float) -> Tensor:
    """Sharpen ``(B, C, H, W)`` images in [0, 1]: ``clip(x - strength * lap(x), 0, 1)``.

    Differentiable in both implementations (the native op registers its derivative), so an
    adaptive attack can take gradients through the defence. The result is contiguous.

    Raises:
        ValueError: ``x`` is not 4-D.
        TypeError: ``x`` is not a float32/float64/bfloat16/float16 tensor.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"laplacian_sharpen: x must be a Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(
            f"laplacian_sharpen: x must be a (B, C, H, W) tensor, got shape {tuple(x.shape)}"
        )
    if x.dtype not in _SUPPORTED_DTYPES:
        raise TypeError(
            f"laplacian_sharpen: x must be float32, float64, bfloat16 or float16, got {x.dtype}"
        )
    if _use_native(x):
        return torch.ops.robust_lightning.laplacian_sharpen(x, strength)
    return _reference_laplacian_sharpen(x, strength)
