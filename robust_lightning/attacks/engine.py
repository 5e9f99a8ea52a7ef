"""AttackEngine: cheaper forward/backward passes for every attack a callback runs.

One options object shared by :class:`~robust_lightning.callbacks.AdversarialTraining` and
:class:`~robust_lightning.callbacks.RobustnessEvaluation`. It wraps the loss (or logits)
function an attack calls, so the attack algorithms themselves stay unchanged:

* ``compile``: the attack's loss function is compiled with :func:`torch.compile` once and
  reused; dynamo specialises it per input shape and dtype (``dynamic=False``), so the
  forward/backward of the input gradient is compiled once per (shape, dtype). Compilations are
  counted in :attr:`AttackEngine.compile_count`. The first call of each function runs eagerly,
  so one-time work in user code (lazy initialisation, a checked-once flag such as
  ``RobustClassifier``'s output check) happens before tracing instead of becoming a guard that
  fails on the second call and forces a recompile. If compiling fails, the engine warns once
  and runs eagerly from then on.
* ``channels_last``: inputs (and, once, the module's 4-D weights) use the channels-last memory
  format, which the convolution kernels run faster on.
* ``attack_precision="bf16"``: the attack's forward/backward run under bf16 autocast; the
  perturbation and its gradient stay in the input dtype (fp32). The training step's own
  precision is untouched because the autocast context only spans the loss call.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor, nn

from robust_lightning.errors import InvalidArgumentError

__all__ = ["ATTACK_PRECISIONS", "AttackEngine"]

ATTACK_PRECISIONS: tuple[str | None, ...] = (None, "bf16", "fp32")
AttackPrecision = Literal["bf16", "fp32"] | None


class AttackEngine:
    """Options that make attack passes cheaper; numerically the plain path within tolerance.

    Args:
        compile: compile the attack's loss function with :func:`torch.compile`.
        channels_last: run 4-D inputs (and the module's 4-D weights) in channels-last format.
        attack_precision: ``None`` follows the trainer's precision, ``"bf16"`` runs the attack's
            forward/backward in bf16 autocast, ``"fp32"`` disables autocast for the attack.
        compile_mode: ``mode`` of :func:`torch.compile` (e.g. ``"reduce-overhead"`` for CUDA
            graphs on a GPU).
        compile_backend: backend of :func:`torch.compile` (``"inductor"``; ``"eager"`` only
            traces, which tests use to count graphs cheaply).
    """

    def __init__(
        self,
        compile: bool = False,
        channels_last: bool = False,
        attack_precision: AttackPrecision = None,
        compile_mode: str | None = None,
        compile_backend: str | Callable[..., Any] = "inductor",
    ) -> None:
        if attack_precision not in ATTACK_PRECISIONS:
            raise InvalidArgumentError(
                f"attack_precision must be one of {ATTACK_PRECISIONS}, got {attack_precision!r}"
            )
        self.compile = bool(compile)
        self.channels_last = bool(channels_last)
        self.attack_precision = attack_precision
        self.compile_mode = compile_mode
        self.compile_backend = compile_backend
        self.compile_count = 0
        self._compiled: dict[Any, Callable[..., Tensor]] = {}
        self._compile_failed = False
        self._converted: set[int] = set()
        self._warmed: set[Any] = set()

    @property
    def active(self) -> bool:
        """Whether any option changes the plain path."""
        return self.compile or self.channels_last or self.attack_precision is not None

    def _counting_backend(self) -> Callable[..., Any]:
        backend = self.compile_backend
        if isinstance(backend, str):
            from torch._dynamo import lookup_backend

            backend = lookup_backend(backend)

        def counted(graph_module: Any, example_inputs: Any, **kwargs: Any) -> Any:
            # Called once per graph dynamo compiles: recompiles show up here.
            self.compile_count += 1
            return backend(graph_module, example_inputs, **kwargs)

        return counted

    def prepare_module(self, module: nn.Module) -> None:
        """Convert the module's weights to channels-last once (idempotent)."""
        if self.channels_last and id(module) not in self._converted:
            module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # stubs omit memory_format
            self._converted.add(id(module))

    def prepare_inputs(self, inputs: Tensor) -> Tensor:
        """The attack's starting inputs in the engine's memory format (values unchanged)."""
        if self.channels_last and inputs.dim() == 4:
            return inputs.contiguous(memory_format=torch.channels_last)
        return inputs

    def _autocast(self, device: torch.device) -> Any:
        if self.attack_precision == "bf16":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        if self.attack_precision == "fp32":
            return torch.autocast(device.type, enabled=False)
        return _null_context()

    def wrap(self, key: Any, fn: Callable[..., Tensor], *args: Any) -> Callable[[Tensor], Tensor]:
        """``x -> fn(x, *args)`` with the engine's options applied.

        Args:
            key: identifies ``fn`` across calls (e.g. the module), so the compiled function is
                built once and dynamo's cache, not a fresh compile, serves later batches.
            fn: the loss or logits function.
            *args: passed through to ``fn`` after ``x`` (e.g. the batch).
        """
        call = fn
        if self.compile and not self._compile_failed:
            compiled = self._compiled.get(key)
            if compiled is None:
                compiled = torch.compile(fn, backend=self._counting_backend(), mode=self.compile_mode,
                                         dynamic=False)
                self._compiled[key] = compiled
            call = compiled

        def loss(x: Tensor) -> Tensor:
            nonlocal call
            with self._autocast(x.device):
                if call is fn:
                    return fn(x, *args)
                if key not in self._warmed:
                    self._warmed.add(key)
                    return fn(x, *args)
                try:
                    return call(x, *args)
                except Exception as error:
                    if not _is_compile_error(error):
                        raise
                    if not self._compile_failed:
                        warnings.warn(f"AttackEngine: torch.compile failed ({type(error).__name__}: "
                                      f"{error}); running the attack eagerly", stacklevel=2)
                    self._compile_failed = True
                    call = fn
                    return fn(x, *args)

        return loss

    def __repr__(self) -> str:
        return (f"AttackEngine(compile={self.compile}, channels_last={self.channels_last}, "
                f"attack_precision={self.attack_precision!r})")


def _is_compile_error(error: Exception) -> bool:
    module = type(error).__module__
    return module.startswith(("torch._dynamo", "torch._inductor", "torch.fx")) or isinstance(
        error, (RuntimeError, NotImplementedError, AssertionError, OSError)
    ) and "compile" in str(error).lower()


class _null_context:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
