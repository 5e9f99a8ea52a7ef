"""AdversarialTraining: replace (part of) each training batch by adversarial inputs."""

from __future__ import annotations

from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from robust_lightning._validation import check_int_at_least
from robust_lightning.attacks.base import Attack
from robust_lightning.attacks.core import attack_mode
from robust_lightning.attacks.engine import AttackEngine, AttackPrecision
from robust_lightning.attacks.generators import RankGenerator
from robust_lightning.callbacks._common import precision_context, run_attack
from robust_lightning.protocol import index_batch, protocol_method, replace_batch_contents

__all__ = ["AdversarialTraining"]


class AdversarialTraining(Callback):
    """Inject adversarial inputs before every training step (adversarial training).

    In ``on_train_batch_start`` the callback asks the module for the inputs to perturb
    (``attack_inputs``) and the loss to maximise (``attack_loss``), runs ``attack`` on the
    unwrapped LightningModule (never through the DDP wrapper), and hands the result to
    ``training_step`` through ``with_adversarial_inputs``. Modules that define none of these
    get the cross-entropy defaults, so a plain ``(x, y)`` LightningModule works unchanged.

    Args:
        attack: the attack that crafts training inputs, e.g. ``PGD(eps="8/255", steps=10)``.
        model_mode: mode the model runs in while attacked: ``"eval"`` (BatchNorm running stats,
            no dropout) or ``"train"``; running statistics are restored either way.
        start_epoch: first epoch (0-based) with adversarial inputs; earlier epochs train clean.
        ratio: fraction of each batch replaced by adversarial inputs (a random subset); 1.0
            attacks every sample.
        seed: seed of the attack's random starts and subset choice; ``None`` derives it from
            ``seed_everything``. Each rank uses its own stream.
        compile: compile the attack's input-gradient computation (:class:`AttackEngine`).
        channels_last: attack in channels-last memory format.
        attack_precision: ``"bf16"`` runs the attack's forward/backward in bf16 autocast (the
            perturbation stays fp32; the training step's precision is untouched), ``"fp32"``
            disables autocast for the attack, ``None`` follows the trainer.
    """

    def __init__(
        self,
        attack: Attack,
        model_mode: Literal["eval", "train"] = "eval",
        start_epoch: int = 0,
        ratio: float = 1.0,
        seed: int | None = None,
        compile: bool = False,
        channels_last: bool = False,
        attack_precision: AttackPrecision = None,
    ) -> None:
        if not isinstance(attack, Attack) and not callable(attack):
            raise TypeError(f"attack must be an Attack (e.g. PGD(...)), got {type(attack).__name__}")
        if model_mode not in ("eval", "train"):
            raise ValueError(f"model_mode must be 'eval' or 'train', got {model_mode!r}")
        check_int_at_least("start_epoch", start_epoch, 0)
        if not 0.0 < float(ratio) <= 1.0:
            raise ValueError(f"ratio must be in (0, 1], got {ratio!r}")
        self.attack = attack
        self.model_mode = model_mode
        self.start_epoch = start_epoch
        self.ratio = float(ratio)
        self._rng = RankGenerator(seed)
        self.engine = AttackEngine(compile=compile, channels_last=channels_last,
                                   attack_precision=attack_precision)

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if trainer.current_epoch < self.start_epoch:
            return
        inputs = protocol_method(pl_module, "attack_inputs")(batch)
        generator = self._rng.get(inputs.device, trainer.global_rank)
        batch_size = inputs.shape[0]
        subset = None
        attacked_batch, attacked_inputs = batch, inputs
        if self.ratio < 1.0:
            count = round(self.ratio * batch_size)
            if count == 0:
                return
            subset = torch.randperm(batch_size, generator=generator, device=inputs.device)[:count]
            attacked_batch = index_batch(batch, subset, batch_size)
            attacked_inputs = inputs[subset]
        with attack_mode(pl_module, self.model_mode), precision_context(trainer):
            inputs_adv = run_attack(self.attack, pl_module, attacked_batch, attacked_inputs, generator,
                                    self.engine)
        if subset is not None:
            partial_adv = inputs.detach().clone()
            partial_adv[subset] = inputs_adv.to(partial_adv.dtype)
            inputs_adv = partial_adv
        new_batch = protocol_method(pl_module, "with_adversarial_inputs")(batch, inputs_adv)
        replace_batch_contents(batch, new_batch)

    @property
    @override
    def state_key(self) -> str:
        # Distinct per attack, so two AdversarialTraining callbacks never share a checkpoint slot.
        return self._generate_state_key(attack=getattr(self.attack, "name", type(self.attack).__name__))

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"generator_state": self._rng.state()}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._rng.load_state(state_dict.get("generator_state"))
