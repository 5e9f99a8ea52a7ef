"""AutoAttack (Croce & Hein 2020): the ensemble reviewers accept, on our own attacks.

"Reliable evaluation of adversarial robustness with an ensemble of diverse parameter-free
attacks" (ICML 2020), Sec. 5. Taken from the reference, fra31/auto-attack
``autoattack/autoattack.py`` (``set_version`` and ``run_standard_evaluation``):

* ``standard``: APGD-CE (100 steps, 1 restart), APGD-T (100 steps, the 9 most likely other
  classes as targets, 1 restart each), FAB-T (9 targets, 1 restart), Square (5000 queries,
  ``p_init = 0.8``, 1 restart), in this order;
* ``plus``: APGD-CE and APGD-DLR with 5 restarts, FAB (untargeted, 5 restarts), Square,
  APGD-T, FAB-T;
* ``rand`` (randomised defences): APGD-CE and APGD-DLR with EOT over 20 samples, 1 restart;
* a point counts as robust only if it is classified correctly clean and after every attack;
  each attack runs only on the points still robust, and its adversarial points are kept for the
  points it fools.

The members are this package's :class:`~robust_lightning.attacks.APGD`,
:class:`~robust_lightning.attacks.Square` and :class:`~robust_lightning.attacks.fab.FAB`.
torchattacks ``torchattacks/attacks/autoattack.py`` builds the same lists but leaves its APGD,
APGD-T and FAB at their 10-step defaults; we use the reference's 100.

Our reading: one random stream (the given :class:`torch.Generator`, or one seeded with
``seed``) feeds the members in turn, where the reference reseeds every member with the same
seed; a FAB point outside the eps-ball is not counted as a success (the reference's FAB
``perturb`` does the same check).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import torch
from torch import Tensor, nn
from typing_extensions import override

from robust_lightning._validation import check_int
from robust_lightning.attacks.autopgd import APGD
from robust_lightning.attacks.base import Attack
from robust_lightning.attacks.core import Bounds, LossFn, Norm
from robust_lightning.attacks.square import Square
from robust_lightning.errors import (
    InvalidArgumentError,
    InvalidArgumentTypeError,
    PrerequisiteError,
)

__all__ = ["AUTOATTACK_VERSIONS", "AutoAttack", "AutoAttackResult", "perturbation_within_budget"]

AutoAttackVersion = Literal["standard", "plus", "rand"]
AUTOATTACK_VERSIONS: tuple[str, ...] = ("standard", "plus", "rand")
LogitsFn = Callable[[Tensor], Tensor]
# (eps, norm, bounds, targeted, n_restarts, steps, n_target_classes) -> a FAB attack object.
FabFactory = Callable[..., Attack]
# Relative slack on the budget check: projections in fp32 land a few ulps outside the ball.
_BUDGET_RTOL = 1e-4
_BUDGET_ATOL = 1e-6


def perturbation_within_budget(x_adv: Tensor, x: Tensor, eps: float, norm: str) -> Tensor:
    """``(B,)`` bool: the perturbation ``x_adv - x`` lies in the ``norm`` ball of radius ``eps``."""
    delta = (x_adv - x).flatten(1).float()
    size = delta.abs().amax(dim=1) if norm == "linf" else delta.norm(dim=1)
    return size <= eps * (1 + _BUDGET_RTOL) + _BUDGET_ATOL


@dataclass
class AutoAttackResult:
    """What one AutoAttack run found.

    Attributes:
        inputs_adv: ``(B, ...)``: an adversarial point for every point some member fooled, the
            clean input elsewhere.
        robust: ``(B,)`` bool: correct clean and after every member.
        clean_correct: ``(B,)`` bool: correct on the clean input.
        robust_after: number of points still robust after the clean check and after each member,
            in order (AutoAttack's running report), e.g. ``{"clean": 97, "apgd-ce": 12, ...}``.
        fooled_by: ``(B,)`` long: index of the member that fooled the point, ``-1`` if none did.
    """

    inputs_adv: Tensor
    robust: Tensor
    clean_correct: Tensor
    robust_after: dict[str, int] = field(default_factory=dict)
    fooled_by: Tensor | None = None


def _default_fab_factory(**options: object) -> Attack:
    """Our FAB, imported when first needed (it lives in ``attacks/fab.py``)."""
    try:
        from robust_lightning.attacks.fab import FAB
    except ImportError as error:  # pragma: no cover - only without attacks/fab.py
        raise PrerequisiteError(
            "AutoAttack's 'standard' and 'plus' versions need FAB (robust_lightning.attacks.fab), "
            f"which could not be imported ({error}); pass fab_factory=... or members=[...]"
        ) from error
    accepted = inspect.signature(FAB).parameters
    if "steps" in options and "steps" not in accepted and "n_iter" in accepted:
        options["n_iter"] = options.pop("steps")
    kwargs: dict[str, Any] = {k: v for k, v in options.items() if k in accepted}
    return FAB(**kwargs)


class AutoAttack(Attack):
    """AutoAttack's ensemble as one attack: usable in ``RobustnessEvaluation`` and standalone.

    In :class:`~robust_lightning.callbacks.RobustnessEvaluation` it is one entry
    (``attacks=[AutoAttack(eps="8/255")]``, logged as ``robust_acc/autoattack_linf_eps8``); the
    callback gives it the module's logits and targets (:meth:`perturb_logits`), each rank its own
    shard, and the logged accuracy is the global one. Standalone, ``AutoAttack(...)(model, x, y)``
    returns ``(inputs_adv, robust)``; :meth:`evaluate` adds mini-batching and, under
    ``torch.distributed``, per-rank shards with globally summed counts.

    Args:
        eps: radius (``"8/255"``).
        norm: ``"linf"`` or ``"l2"``.
        version: ``"standard"``, ``"plus"`` or ``"rand"`` (see the module docstring).
        seed: seeds the random stream when no generator is given (standalone use).
        steps: iterations of APGD and FAB (100 in AutoAttack; lower only to save time in tests).
        n_queries: Square's queries (5000 in AutoAttack).
        n_target_classes: targets of APGD-T and FAB-T (9 in AutoAttack).
        eot_samples: EOT samples of the ``rand`` version (20 in AutoAttack).
        bounds: valid input range.
        fab_factory: builds the FAB members (keyword options ``eps, norm, bounds, targeted,
            n_restarts, steps, n_target_classes``); defaults to :class:`~robust_lightning.attacks.fab.FAB`.
        members: replaces the version's list of attacks (``[(name, attack), ...]``), e.g. to
            add an adaptive attack; every member must accept ``perturb_logits``.
        name: metric name override; defaults to ``autoattack_linf_eps8`` (``autoattack-plus_...``,
            ``autoattack-rand_...`` for the other versions).
    """

    requires_logits = True
    # The callback's worst case need not run it a second time: it already is an ensemble run
    # on still-robust points only.
    is_ensemble = True

    def __init__(
        self,
        eps: float | str = "8/255",
        norm: Norm = "linf",
        version: AutoAttackVersion = "standard",
        seed: int = 0,
        steps: int = 100,
        n_queries: int = 5000,
        n_target_classes: int = 9,
        eot_samples: int = 20,
        bounds: Bounds = (0.0, 1.0),
        fab_factory: FabFactory | None = None,
        members: Sequence[tuple[str, Attack]] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(eps=eps, norm=norm, bounds=bounds, name=name)
        if version not in AUTOATTACK_VERSIONS:
            raise InvalidArgumentError(f"version must be one of {AUTOATTACK_VERSIONS}, got {version!r}")
        for label, value, minimum in (("steps", steps, 1), ("n_queries", n_queries, 1),
                                      ("n_target_classes", n_target_classes, 1),
                                      ("eot_samples", eot_samples, 1), ("seed", seed, 0)):
            check_int(label, value, minimum=minimum)
        if members is not None:
            members = list(members)
            if not members:
                raise InvalidArgumentError("members must name at least one (name, attack) pair")
            for entry in members:
                if not (isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[0], str)
                        and hasattr(entry[1], "perturb_logits")):
                    raise InvalidArgumentTypeError(
                        f"members must be (name, attack) pairs of attacks with perturb_logits, got {entry!r}")
        self.version = version
        self.seed = seed
        self.steps = steps
        self.n_queries = n_queries
        self.n_target_classes = n_target_classes
        self.eot_samples = eot_samples
        self.fab_factory = fab_factory
        self._members = members
        self._last_result: AutoAttackResult | None = None

    @property
    def last_result(self) -> AutoAttackResult | None:
        """The result of the latest :meth:`run` (the callback reads its running counts)."""
        return self._last_result

    @override
    @property
    def kind(self) -> str:  # type: ignore[override]
        return "autoattack" if self.version == "standard" else f"autoattack-{self.version}"

    @override
    def with_eps(self, eps: float | str) -> AutoAttack:
        clone = cast(AutoAttack, super().with_eps(eps))
        if clone._members is not None:
            clone._members = [(n, a.with_eps(clone.eps)) for n, a in clone._members]
        clone._last_result = None
        return clone

    # -- the version's attacks ----------------------------------------------------------------
    def members(self) -> list[tuple[str, Attack]]:
        """``[(name, attack), ...]`` in the order they run, built for this radius."""
        if self._members is not None:
            return list(self._members)
        common: dict[str, Any] = {"eps": self.eps, "norm": self.norm, "bounds": self.bounds, "steps": self.steps}

        def apgd(loss: Literal["ce", "dlr", "dlr_targeted"], n_restarts: int, eot_samples: int = 1) -> APGD:
            return APGD(loss=loss, n_restarts=n_restarts, n_target_classes=self.n_target_classes,
                        eot_samples=eot_samples, **common)

        def fab(targeted: bool, n_restarts: int) -> Attack:
            factory = self.fab_factory or _default_fab_factory
            return factory(targeted=targeted, n_restarts=n_restarts, n_target_classes=self.n_target_classes,
                           **common)

        def square() -> Square:
            return Square(eps=self.eps, norm=self.norm, n_queries=self.n_queries, p_init=0.8, n_restarts=1,
                          bounds=self.bounds)

        if self.version == "standard":
            return [("apgd-ce", apgd("ce", 1)), ("apgd-t", apgd("dlr_targeted", 1)),
                    ("fab-t", fab(True, 1)), ("square", square())]
        if self.version == "plus":
            return [("apgd-ce", apgd("ce", 5)), ("apgd-dlr", apgd("dlr", 5)), ("fab", fab(False, 5)),
                    ("square", square()), ("apgd-t", apgd("dlr_targeted", 1)), ("fab-t", fab(True, 1))]
        return [("apgd-ce", apgd("ce", 1, self.eot_samples)), ("apgd-dlr", apgd("dlr", 1, self.eot_samples))]

    # -- running -------------------------------------------------------------------------------
    def run(self, logits_fn: LogitsFn, x: Tensor, target: Tensor,
            generator: torch.Generator | None = None) -> AutoAttackResult:
        """Run the ensemble on a batch (``run_standard_evaluation`` for one batch).

        Args:
            logits_fn: the model's ``(B, C)`` logits; called on sub-batches of ``x``.
            x: clean inputs in ``bounds``.
            target: integer labels ``(B,)``.
            generator: random stream of every member; ``None`` seeds one with ``seed``.
        """
        if not isinstance(target, Tensor) or target.shape != (x.shape[0],) or target.dtype not in (
                torch.int64, torch.int32):
            raise InvalidArgumentError(
                f"target must be integer labels of shape ({x.shape[0]},), got "
                f"{getattr(target, 'dtype', type(target).__name__)} {tuple(getattr(target, 'shape', ()))}")
        if generator is None:
            generator = torch.Generator(device=x.device).manual_seed(self.seed)
        with torch.inference_mode(False):
            x = x.detach().clone()
            target = target.detach().clone().long()
            with torch.no_grad():
                clean_correct = logits_fn(x).argmax(dim=1) == target
            robust = clean_correct.clone()
            inputs_adv = x.clone()
            fooled_by = torch.full((x.shape[0],), -1, dtype=torch.long, device=x.device)
            robust_after = {"clean": int(robust.sum())}
            for position, (member_name, attack) in enumerate(self.members()):
                index = robust.nonzero().squeeze(1)
                if index.numel():
                    # Every member is a logits attack (APGD, FAB, Square or a replacement).
                    adv = cast(Any, attack).perturb_logits(logits_fn, x[index], target[index], generator=generator)
                    with torch.no_grad():
                        fooled = logits_fn(adv).argmax(dim=1) != target[index]
                    # A minimal-norm attack (FAB) may return a point beyond eps: not a success here.
                    fooled &= perturbation_within_budget(adv, x[index], self.eps, self.norm)
                    hit = index[fooled]
                    inputs_adv[hit] = adv[fooled].to(inputs_adv.dtype)
                    robust[hit] = False
                    fooled_by[hit] = position
                robust_after[member_name] = int(robust.sum())
        result = AutoAttackResult(inputs_adv, robust, clean_correct, robust_after, fooled_by)
        self._last_result = result
        return result

    def perturb_logits(self, logits_fn: LogitsFn, x: Tensor, target: Tensor,
                       generator: torch.Generator | None = None) -> Tensor:
        """Adversarial inputs for ``x`` (the callbacks' entry point for logit attacks)."""
        return self.run(logits_fn, x, target, generator=generator).inputs_adv

    def __call__(self, model: nn.Module | LogitsFn | LossFn, x: Tensor,  # type: ignore[override]
                 target: Tensor | None = None, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``(inputs_adv, robust)`` for a batch; ``model`` is any callable returning logits."""
        if target is None:
            raise InvalidArgumentTypeError(
                "AutoAttack needs class logits and labels: call AutoAttack(...)(model, x, y); inside "
                "RobustnessEvaluation it receives them from the module")
        result = self.run(model, x, target, generator=generator)
        return result.inputs_adv, result.robust

    def evaluate(self, model: nn.Module | LogitsFn, x: Tensor, target: Tensor, batch_size: int = 250,
                 generator: torch.Generator | None = None) -> dict[str, float]:
        """Robust accuracy over a data set, in batches, sharded over ``torch.distributed`` ranks.

        Each rank attacks the samples ``rank, rank + world, ...`` and the counts (clean, still
        robust after each member, total) are summed over ranks, so every rank returns the global
        ``{"clean": ..., "<member>": ..., "robust_accuracy": ...}`` fractions.
        """
        check_int("batch_size", batch_size, minimum=1)
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        rank, world = (torch.distributed.get_rank(), torch.distributed.get_world_size()) if distributed else (0, 1)
        x_local, y_local = x[rank::world], target[rank::world]
        if generator is None:
            generator = torch.Generator(device=x.device).manual_seed(self.seed + 1_000_003 * rank)
        names = ["clean", *(n for n, _ in self.members())]
        counts = torch.zeros(len(names) + 1, dtype=torch.float64, device=x.device)
        for start in range(0, x_local.shape[0], batch_size):
            result = self.run(model, x_local[start:start + batch_size], y_local[start:start + batch_size], generator)
            counts[:-1] += torch.tensor([float(result.robust_after[n]) for n in names], dtype=torch.float64,
                                        device=x.device)
            counts[-1] += result.robust.numel()
        if distributed:
            torch.distributed.all_reduce(counts)
        total = max(float(counts[-1]), 1.0)
        fractions = {n: float(c) / total for n, c in zip(names, counts[:-1], strict=False)}
        fractions["robust_accuracy"] = fractions[names[-1]]
        return fractions
