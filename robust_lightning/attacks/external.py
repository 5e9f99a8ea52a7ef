"""ExternalAttack: a torchattacks or ART attack as one entry of ``RobustnessEvaluation``.

Users who already trust an attack from another library can put it into the same report as
ours::

    RobustnessEvaluation(attacks=[AutoAttack(eps="8/255"),
                                  ExternalAttack(torchattacks.PGD(model, eps=8/255, steps=20))])

Two interfaces are recognised by duck typing, so neither library is imported here:

* **torchattacks** (``torchattacks/attack.py``): an object called as ``attack(images, labels)``
  that queries the model it holds in ``.model`` and can be re-pointed with ``set_model``. We
  point it (and any torchattacks attacks it holds, as ``MultiAttack``/``AutoAttack`` do) at the
  module being evaluated for the duration of the call, so the attack sees exactly the model the
  callback scores, in the callback's eval/train mode.
* **ART** evasion attacks (``art.attacks.EvasionAttack``): ``attack.generate(x=np.ndarray,
  y=np.ndarray) -> np.ndarray``. ART attacks hold their own estimator (the user's
  ``PyTorchClassifier`` around the same network), so they are called as they are; inputs and
  outputs are converted between tensors and arrays.

The budget (``eps``, ``norm``) names the metric and groups the attack in the worst case; it is
read from the attack (``eps``; torchattacks ``norm="Linf"/"L2"``, ART ``norm=np.inf/2``) unless
given.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn
from typing_extensions import override

from robust_lightning._validation import is_number
from robust_lightning.attacks.base import Attack
from robust_lightning.attacks.core import Bounds, LossFn, Norm
from robust_lightning.errors import InvalidArgumentError, InvalidArgumentTypeError

__all__ = ["ExternalAttack", "is_art_attack", "is_torchattacks_attack"]

LogitsFn = Callable[[Tensor], Tensor]


class _LogitsModule(nn.Module):
    """An ``nn.Module`` face for a logits function (what torchattacks expects in ``.model``)."""

    def __init__(self, logits_fn: LogitsFn, like: Tensor) -> None:
        super().__init__()
        self.logits_fn = logits_fn
        # torchattacks reads the device from the first parameter; a buffer-free dummy gives it.
        self.anchor = nn.Parameter(torch.zeros((), device=like.device), requires_grad=False)

    @override
    def forward(self, x: Tensor) -> Tensor:
        return self.logits_fn(x)


def is_torchattacks_attack(attack: Any) -> bool:
    """Whether ``attack`` looks like a torchattacks attack (callable, with ``set_model`` and ``model``)."""
    return callable(attack) and hasattr(attack, "set_model") and hasattr(attack, "model")


def is_art_attack(attack: Any) -> bool:
    """Whether ``attack`` looks like an ART evasion attack (a callable ``generate``)."""
    return callable(getattr(attack, "generate", None))


def _torchattacks_members(attack: Any) -> list[Any]:
    """The attack and every torchattacks attack it holds (MultiAttack lists, AutoAttack's inner one)."""
    found, stack, seen = [], [attack], set()
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if is_torchattacks_attack(item):
            found.append(item)
            for value in vars(item).values():
                if isinstance(value, (list, tuple)):
                    stack.extend(v for v in value if is_torchattacks_attack(v))
                elif is_torchattacks_attack(value):
                    stack.append(value)
    return found


def _norm_of(attack: Any) -> Norm:
    norm = getattr(attack, "norm", None)
    if norm is None:
        # torchattacks names its L2 attacks ...L2 (PGDL2, FFGSM is L-inf); the default is L-inf.
        return "l2" if type(attack).__name__.upper().endswith("L2") else "linf"
    if isinstance(norm, str) and norm.lower() in ("linf", "l2"):
        return norm.lower()  # type: ignore[return-value]
    if isinstance(norm, (int, float)) and (math.isinf(norm) or norm == 2):
        return "linf" if math.isinf(norm) else "l2"
    raise InvalidArgumentError(
        f"cannot tell the norm of {type(attack).__name__} (norm={norm!r}); pass norm='linf' or 'l2'")


class ExternalAttack(Attack):
    """Wrap a torchattacks attack or an ART evasion attack for ``RobustnessEvaluation``.

    Args:
        attack: a torchattacks attack (``attack(images, labels)``, ``set_model``) or an ART
            evasion attack (``generate(x=..., y=...)``).
        eps: its radius, for the metric name and the worst-case group; read from
            ``attack.eps`` when ``None``.
        norm: ``"linf"`` or ``"l2"``; read from the attack when ``None``.
        bounds: valid input range (outputs are clamped to it).
        name: metric name override; defaults to ``torchattacks-pgd_linf_eps8``,
            ``art-projectedgradientdescent_linf_eps8`` etc.
    """

    requires_logits = True

    def __init__(self, attack: Any, eps: float | str | None = None, norm: Norm | None = None,
                 bounds: Bounds = (0.0, 1.0), name: str | None = None) -> None:
        if is_torchattacks_attack(attack):
            self.library = "torchattacks"
        elif is_art_attack(attack):
            self.library = "art"
        else:
            raise InvalidArgumentTypeError(
                f"attack must be a torchattacks attack (callable, with set_model) or an ART evasion "
                f"attack (with generate(x=..., y=...)), got {type(attack).__name__}")
        if eps is None:
            attack_eps = getattr(attack, "eps", None)
            if not is_number(attack_eps):
                raise InvalidArgumentError(
                    f"cannot read eps from {type(attack).__name__}; pass eps=... to ExternalAttack")
            eps = float(attack_eps)
        super().__init__(eps=eps, norm=norm if norm is not None else _norm_of(attack), bounds=bounds, name=name)
        self.attack = attack

    @override
    @property
    def kind(self) -> str:  # type: ignore[override]
        return f"{self.library}-{re.sub(r'[^a-z0-9]+', '', type(self.attack).__name__.lower())}"

    @override
    def with_eps(self, eps: float | str) -> ExternalAttack:
        """A copy at another radius: the wrapped attack is copied with its ``eps`` replaced."""
        clone = cast(ExternalAttack, super().with_eps(eps))
        if not hasattr(self.attack, "eps"):
            raise InvalidArgumentError(
                f"{type(self.attack).__name__} has no eps attribute, so an eps sweep cannot vary it")
        clone.attack = copy.copy(self.attack)
        clone.attack.eps = clone.eps
        return clone

    def perturb_logits(self, logits_fn: LogitsFn, x: Tensor, target: Tensor,
                       generator: torch.Generator | None = None) -> Tensor:
        """Run the wrapped attack on ``x``; ``generator`` is unused (the library seeds itself)."""
        lo, hi = self.bounds
        with torch.inference_mode(False):
            x = x.detach().clone()
            if self.library == "art":
                out = self.attack.generate(x=x.cpu().numpy(), y=target.detach().cpu().numpy())
                x_adv = torch.as_tensor(np.asarray(out), dtype=x.dtype).to(x.device).reshape(x.shape)
            else:
                x_adv = self._run_torchattacks(logits_fn, x, target)
        return x_adv.detach().clamp(lo, hi)

    def _run_torchattacks(self, logits_fn: LogitsFn, x: Tensor, target: Tensor) -> Tensor:
        module = _LogitsModule(logits_fn, x)
        members = _torchattacks_members(self.attack)
        saved = [(m, m.model, getattr(m, "device", None)) for m in members]
        try:
            for member in members:
                member.set_model(module)
                if hasattr(member, "set_device"):
                    member.set_device(x.device)
                # The callback has already put the module in its attack mode; torchattacks would
                # switch our wrapper's mode, which does not reach the module, so leave it.
            with torch.enable_grad():
                return self.attack(x, target.detach().clone())
        finally:
            for member, model, device in saved:
                member.set_model(model)
                if device is not None and hasattr(member, "set_device"):
                    member.set_device(device)

    def __call__(self, loss_fn: LossFn, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        raise InvalidArgumentTypeError(
            "ExternalAttack needs class logits and labels: call perturb_logits(logits_fn, x, target), "
            "as the robust_lightning callbacks do")
