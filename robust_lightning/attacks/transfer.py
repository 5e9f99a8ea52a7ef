"""Transfer (black-box) attacks: craft on a surrogate model, evaluate on the target."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robust_lightning._checkpoint import load_checkpoint
from robust_lightning.attacks.base import Attack
from robust_lightning.attacks.core import LossFn, attack_mode
from robust_lightning.errors import CheckpointError, PrerequisiteError

__all__ = ["TransferAttack", "load_surrogate"]


def load_surrogate(surrogate: nn.Module, checkpoint: str | Path | None) -> nn.Module:
    """Load weights into ``surrogate`` from a Lightning checkpoint or a bare state dict.

    Loading uses ``weights_only=True``: a checkpoint cannot run code.

    Raises:
        PrerequisiteError: the file does not exist (train the surrogate first).
        CheckpointError: the file is corrupt or holds a pickled object; nothing of it ran.
    """
    if checkpoint is None:
        return surrogate
    path = Path(checkpoint)
    if not path.is_file():
        raise PrerequisiteError(
            f"surrogate_checkpoint {str(path)!r} does not exist; train the surrogate first "
            "(e.g. robust-lightning fit --config configs/sharpening/digits_surrogate.yaml)"
        )
    state = load_checkpoint(path, argument="surrogate_checkpoint")
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"surrogate_checkpoint {str(path)!r} holds no state dict")
    missing, unexpected = surrogate.load_state_dict(state, strict=False)
    if missing:
        raise ValueError(
            f"surrogate_checkpoint {str(path)!r} does not match the surrogate: missing {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''}; unexpected {unexpected[:5]}"
        )
    return surrogate


class TransferAttack(Attack):
    """Craft with ``attack`` on ``surrogate``; the target model only sees the result.

    Args:
        attack: the attack run on the surrogate (its eps/norm are this attack's).
        surrogate: the surrogate classifier returning logits on ``[0, 1]`` inputs; in YAML a
            ``class_path`` block (e.g. a ``RobustClassifier`` with its backbone).
        surrogate_checkpoint: weights for ``surrogate`` (Lightning ``.ckpt`` or a state dict).
        name: metric name override; defaults to ``transfer-<attack kind>_<norm>_eps<k>``.
    """

    white_box = False
    requires_logits = True

    def __init__(
        self,
        attack: Attack,
        surrogate: nn.Module,
        surrogate_checkpoint: str | None = None,
        name: str | None = None,
    ) -> None:
        if not isinstance(attack, Attack):
            raise TypeError(f"attack must be an Attack, got {type(attack).__name__}")
        if not isinstance(surrogate, nn.Module):
            raise TypeError(f"surrogate must be an nn.Module, got {type(surrogate).__name__}")
        super().__init__(eps=attack.eps, norm=attack.norm, bounds=attack.bounds, name=name)
        self.attack = attack
        self.surrogate = load_surrogate(surrogate, surrogate_checkpoint).eval()

    @property
    def kind(self) -> str:  # type: ignore[override]
        return f"transfer-{self.attack.kind}"

    def with_eps(self, eps: float | str) -> Attack:
        clone = copy.copy(self)
        clone.attack = self.attack.with_eps(eps)
        clone.eps = clone.attack.eps
        clone._name = None
        return clone

    def __call__(self, loss_fn: LossFn, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        raise TypeError("TransferAttack needs the targets: call perturb_logits(logits_fn, x, target)")

    def perturb_logits(
        self,
        logits_fn: Callable[[Tensor], Tensor],
        x: Tensor,
        target: Tensor,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Adversarial inputs crafted on the surrogate; ``logits_fn`` (the target) is unused."""
        surrogate = self.surrogate.to(x.device)
        with attack_mode(surrogate):
            perturb_logits = getattr(self.attack, "perturb_logits", None)
            if getattr(self.attack, "requires_logits", False) and perturb_logits is not None:
                return perturb_logits(surrogate, x, target, generator=generator)
            return self.attack(lambda z: F.cross_entropy(surrogate(z).float(), target, reduction="none"),
                               x, generator=generator)
