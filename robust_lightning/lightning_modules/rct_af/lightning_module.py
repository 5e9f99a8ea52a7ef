"""RCTAFClassifier: a RobustClassifier whose backbone activations have a set max|σ''|.

The backbone is built as usual (from the config's ``class_path``/``init_args``); at init every
rectifier-like activation module in it is replaced by
:class:`~robust_lightning.lightning_modules.rct_af.model.CurvatureTunableActivation` with
``max|σ''| = max_curvature`` (``None`` keeps the backbone's own activations: the ReLU baseline).
Training recipes (PGD-AT, TRADES, FGSM-RS, standard), metrics and checkpoints are
:class:`~robust_lightning.lightning_modules.classifier.RobustClassifier`'s, unchanged.

Optionally the module logs ``val/hessian_diag_norm``: the normalised Hessian-diagonal norm of
the training objective's loss (cross-entropy at the training attack's adversarial inputs) on the
first validation batch, the quantity the paper links to robust generalisation.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Literal

import torch
from torch import nn

from robust_lightning._validation import check_choice, check_int_at_least, is_number
from robust_lightning.attacks.core import attack_mode
from robust_lightning.errors import InvalidArgumentError
from robust_lightning.lightning_modules.classifier import Recipe, RobustClassifier
from robust_lightning.lightning_modules.rct_af.model import (
    ACTIVATION_BASES,
    CurvatureTunableActivation,
    hessian_diag_norm,
    swap_activations,
)
from robust_lightning.protocol import split_batch

__all__ = ["RCTAFClassifier"]


class RCTAFClassifier(RobustClassifier):
    """Adversarial training with curvature-controlled activations (RCT-AF, Yu et al. 2026).

    Args:
        backbone: the network (``SmallCNN``, ``PreActResNet18``, a torchvision ResNet, ...);
            its activation modules are swapped in place.
        max_curvature: ``max|σ''|`` of every activation (κ > 0); ``None`` keeps the backbone's
            activations (the ReLU baseline, ``max|σ''| = ∞``). The paper finds κ in [4, 10] best.
        activation_base: the smooth rectifier the curvature is set on: ``"silu"``,
            ``"softplus"`` or ``"gelu"``.
        hessian_every_n_epochs: log ``val/hessian_diag_norm`` every n epochs (0 = never).
        hessian_probes: Hutchinson probes per measurement.
        hessian_samples: first n samples of the first validation batch used for it.
        recipe: as in :class:`~robust_lightning.lightning_modules.classifier.RobustClassifier`,
            but PGD-AT (``"pgd_at"``) by default.
        **kwargs: every other
            :class:`~robust_lightning.lightning_modules.classifier.RobustClassifier` argument
            (``num_classes``, ``mean``, ``std``, ``eps``, ``alpha``, ``steps``, ``norm``,
            ``trades_beta``, ``attack_model_mode``, ``optimizer``, ``lr_scheduler``,
            ``scheduler_interval``), passed through unchanged.

    Raises:
        ValueError: naming the argument (``max_curvature``, ``activation_base``,
            ``hessian_*``), or when ``max_curvature`` is set but the backbone has no activation
            module to swap (e.g. it calls ``F.relu`` inside ``forward``).
    """

    def __init__(
        self,
        backbone: nn.Module,
        max_curvature: float | None = None,
        activation_base: Literal["silu", "softplus", "gelu"] = "silu",
        hessian_every_n_epochs: int = 0,
        hessian_probes: int = 8,
        hessian_samples: int = 128,
        recipe: Recipe = "pgd_at",
        **kwargs: Any,
    ) -> None:
        check_choice("activation_base", activation_base, ACTIVATION_BASES)
        if max_curvature is not None and not (is_number(max_curvature) and 0 < max_curvature < math.inf):
            raise InvalidArgumentError(
                f"max_curvature must be a finite number > 0, or None for the backbone's own "
                f"(ReLU) activations, got {max_curvature!r}"
            )
        for name, value, minimum in (("hessian_every_n_epochs", hessian_every_n_epochs, 0),
                                     ("hessian_probes", hessian_probes, 1),
                                     ("hessian_samples", hessian_samples, 1)):
            check_int_at_least(name, value, minimum)
        super().__init__(backbone=backbone, recipe=recipe, **kwargs)
        self.max_curvature = None if max_curvature is None else float(max_curvature)
        self.activation_base = activation_base
        self.hessian_every_n_epochs = hessian_every_n_epochs
        self.hessian_probes = hessian_probes
        self.hessian_samples = hessian_samples
        self.num_swapped_activations = 0
        if self.max_curvature is not None:
            factory = functools.partial(CurvatureTunableActivation, self.max_curvature, activation_base)
            self.num_swapped_activations = swap_activations(backbone, factory)
            if self.num_swapped_activations == 0:
                raise ValueError(
                    f"max_curvature={max_curvature} was given but the backbone "
                    f"{type(backbone).__name__} has no activation modules to swap; activations "
                    "applied functionally (F.relu inside forward) cannot be replaced: build the "
                    "backbone with nn.ReLU modules (or an activation factory)"
                )

    # -- the paper's sharpness measure ------------------------------------------------------
    def hessian_diag_norm(
        self,
        batch: Any,
        adversarial: bool = True,
        num_probes: int | None = None,
        generator: torch.Generator | None = None,
    ) -> float:
        """Normalised Hessian-diagonal norm of the cross-entropy at ``batch`` (RMS of diag(H)).

        With ``adversarial=True`` and an adversarial recipe, the loss is taken at the training
        attack's adversarial inputs (crafted here, in eval mode), i.e. on the objective
        adversarial training minimises; otherwise at the clean inputs. The Hessian is w.r.t.
        all trainable parameters of the network (``self.model``), in eval mode, in float32.

        Args:
            batch: ``(inputs, targets)``.
            adversarial: measure at adversarial inputs when the recipe has an attack.
            num_probes: Hutchinson probes; defaults to ``hessian_probes``.
            generator: seeds the attack's random start and the probes; defaults to seed 0.
        """
        x, y = split_batch(batch)
        if generator is None:
            generator = torch.Generator(device=x.device).manual_seed(0)
        with torch.inference_mode(False), torch.enable_grad(), torch.autocast(x.device.type, enabled=False):
            x, y = x.detach().clone().float(), y.detach().clone()
            # The attack maximises cross-entropy here (RobustClassifier only switches to the
            # TRADES KL inside a training loop), which is the robust loss whose sharpness counts.
            if adversarial and self.training_attack is not None and self.eps > 0:
                with attack_mode(self):
                    x = self.training_attack(lambda z: self.attack_loss(z, (z, y)), x, generator=generator)
            return hessian_diag_norm(self.model, (x, y), num_probes=num_probes or self.hessian_probes,
                                     generator=generator)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        super().validation_step(batch, batch_idx)
        if (batch_idx == 0 and self.hessian_every_n_epochs
                and not self.trainer.sanity_checking
                and (self.current_epoch + 1) % self.hessian_every_n_epochs == 0):
            x, y = split_batch(batch)
            n = self.hessian_samples
            value = self.hessian_diag_norm((x[:n], y[:n]))
            self.log("val/hessian_diag_norm", torch.tensor(value, device=x.device), sync_dist=True)

    def extra_repr(self) -> str:
        if self.max_curvature is None:
            return "max_curvature=None (backbone activations kept)"
        return (f"max_curvature={self.max_curvature:g}, activation_base={self.activation_base!r}, "
                f"swapped={self.num_swapped_activations}")
