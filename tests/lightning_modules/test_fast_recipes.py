"""Free-AT, GradAlign and FAT: the mechanism each recipe adds, checked against its removal."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robust_lightning import (
    PGD,
    AdversarialTraining,
    EarlyStoppedPGD,
    RobustClassifier,
    SmallCNN,
)
from robust_lightning.attacks.fast import (
    FAT_STEP_RATIO,
    fat_dynamic_tau,
    free_at_update,
    gradient_alignment_penalty,
)
from robust_lightning.datamodules import DigitsDataModule
from robust_lightning.errors import InvalidArgumentError

EPS = 0.1


def _classifier(recipe: str, **kwargs) -> RobustClassifier:
    torch.manual_seed(0)
    return RobustClassifier(SmallCNN(num_classes=10, in_channels=1, width=8, hidden=16),
                            mean=[0.5], std=[0.5], recipe=recipe, eps=EPS, **kwargs)


def _trainer(tmp_path: Path, **kwargs) -> pl.Trainer:
    defaults = {"accelerator": "cpu", "max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 0,
                "logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
                "enable_model_summary": False, "default_root_dir": tmp_path, "num_sanity_val_steps": 0}
    return pl.Trainer(**{**defaults, **kwargs})


class _InputRecorder(pl.Callback):
    """Records the inputs every training forward pass of the backbone receives."""

    def __init__(self) -> None:
        self.inputs: list[torch.Tensor] = []
        self.batches: list[torch.Tensor] = []

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        def hook(module: nn.Module, args: tuple) -> None:
            if module.training:
                self.inputs.append(args[0].detach().clone())
        pl_module.model.register_forward_pre_hook(hook)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batches.append(batch[0].detach().clone())


# -- Free-AT ------------------------------------------------------------------------------

def test_free_at_makes_m_updates_per_batch_and_carries_the_perturbation(tmp_path: Path) -> None:
    replays = 3
    model = _classifier("free_at", free_replays=replays)
    assert model.configure_callbacks() == []  # no separate attack: the replays are the attack
    recorder = _InputRecorder()
    trainer = _trainer(tmp_path, callbacks=[recorder])
    trainer.fit(model, datamodule=DigitsDataModule(batch_size=32, augment=False))
    # m optimizer steps per minibatch (one per replay), against 1 for every other recipe.
    assert trainer.global_step == 2 * replays
    assert len(recorder.inputs) == 2 * replays
    first_batch, second_batch = recorder.batches
    seen = [inputs - batch for inputs, batch in
            zip(recorder.inputs, [first_batch] * replays + [second_batch] * replays, strict=False)]
    # The perturbation starts at zero once; each replay moves it by eps * sign(grad), clipped.
    assert seen[0].abs().max() == 0
    for delta in seen:
        assert delta.abs().max() <= EPS + 1e-6
    assert seen[1].abs().max() == pytest.approx(EPS, abs=1e-6)
    # Carried across replays: the second and third replays differ from the clean batch and from
    # each other.
    assert not torch.equal(seen[1], seen[2])
    # Carried across minibatches: the first replay of the second batch already starts perturbed
    # (without the carry it would be the clean batch, like the very first replay).
    assert seen[replays].abs().max() > EPS / 2
    stored = model._free_perturbation.delta
    assert stored is not None and stored.abs().max() <= EPS + 1e-6


def test_free_at_update_is_a_clipped_eps_sign_step() -> None:
    delta = torch.tensor([0.0, 0.05, -0.08, 0.1])
    grad = torch.tensor([1.0, 1.0, -1.0, -2.0])
    torch.testing.assert_close(free_at_update(delta, grad, 0.1), torch.tensor([0.1, 0.1, -0.1, 0.0]))


def test_free_at_steps_per_step_schedulers_on_every_replay(tmp_path: Path) -> None:
    model = _classifier("free_at", free_replays=2, optimizer=lambda p: torch.optim.SGD(p, lr=0.1),
                        lr_scheduler=lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=1, gamma=0.5),
                        scheduler_interval="step")
    trainer = _trainer(tmp_path, limit_train_batches=1)
    trainer.fit(model, datamodule=DigitsDataModule(batch_size=32))
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**2)


# -- GradAlign ----------------------------------------------------------------------------

def test_gradient_alignment_is_zero_for_a_linear_loss_and_positive_otherwise() -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(8, 1, 6, 6, generator=generator)
    w = torch.randn(1, 6, 6, generator=generator)
    linear = gradient_alignment_penalty(lambda z: (z * w).flatten(1).sum(1), x, EPS, generator=generator)
    assert float(linear) == pytest.approx(0.0, abs=1e-6)

    model = _classifier("grad_align")
    y = torch.randint(0, 10, (8,), generator=generator)
    penalty = gradient_alignment_penalty(lambda z: F.cross_entropy(model(z), y, reduction="none"),
                                         x, EPS, generator=generator)
    assert float(penalty) > 1e-4
    penalty.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads), "the penalty must reach the weights"


def test_grad_align_step_adds_lambda_times_the_penalty(tmp_path: Path) -> None:
    losses = {}
    for lam in (0.0, 5.0):
        # eval mode: the gradients' forwards run in eval mode, so the recorder sees only the
        # training forward (the default, train mode, is checked below).
        model = _classifier("grad_align", grad_align_lambda=lam, attack_model_mode="eval")
        recorder = _InputRecorder()
        trainer = _trainer(tmp_path, limit_train_batches=1, callbacks=[recorder])
        trainer.fit(model, datamodule=DigitsDataModule(batch_size=32, augment=False))
        losses[lam] = float(trainer.callback_metrics["train/loss"])
        regulariser = float(trainer.callback_metrics["train/grad_align_reg"])
        # The trained inputs are the FGSM step from x: |delta| = eps wherever not clamped.
        delta = recorder.inputs[-1] - recorder.batches[-1]
        assert delta.abs().max() == pytest.approx(EPS, abs=1e-6)
    # Same seed, same FGSM inputs: the lambda = 5 loss exceeds the lambda = 0 loss by 5 * reg.
    assert regulariser > 0
    assert losses[5.0] - losses[0.0] == pytest.approx(5.0 * regulariser, rel=1e-3, abs=1e-5)


def test_grad_align_defaults_to_train_mode_and_trains(tmp_path: Path) -> None:
    """Their train.py takes both gradients in train mode; the penalty's double backward must
    survive BatchNorm updating its running statistics in that forward."""
    model = _classifier("grad_align")
    assert model.attack_model_mode == "train"
    assert _classifier("pgd_at").attack_model_mode == "eval"
    before = [p.detach().clone() for p in model.parameters()]
    trainer = _trainer(tmp_path, limit_train_batches=2)
    trainer.fit(model, datamodule=DigitsDataModule(batch_size=32))
    assert float(trainer.callback_metrics["train/grad_align_reg"]) > 0
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=False))


# -- FAT ----------------------------------------------------------------------------------

def _threshold_logits(threshold: float):
    """Two classes; class 1 wins once the pixel sum passes ``threshold`` (target is class 0)."""
    def logits(z: torch.Tensor) -> torch.Tensor:
        score = z.flatten(1).sum(1) - threshold
        return torch.stack([torch.zeros_like(score), score], dim=1)
    return logits


class _TwoSamples:
    """Logits for a batch of two samples with different thresholds. Once sample 0 has stopped,
    the attack queries sample 1 alone (it is the one that never becomes misclassified)."""

    def __init__(self, first, second) -> None:
        self.first, self.second = first, second

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        if z.shape[0] == 2:
            return torch.cat([self.first(z[:1]), self.second(z[1:])])
        return self.second(z)


@pytest.mark.parametrize("tau", [0, 1, 2])
def test_early_stopped_pgd_stops_tau_steps_after_misclassification(tau: int) -> None:
    d, alpha = 4, 0.01
    x = torch.full((2, d), 0.5)
    # Sample 0 is misclassified after 3 steps of alpha on every pixel; sample 1 never within eps.
    logits = _TwoSamples(_threshold_logits(0.5 * d + 2.5 * d * alpha), _threshold_logits(0.5 * d + 5.0))
    target = torch.zeros(2, dtype=torch.long)
    attack = EarlyStoppedPGD(eps=0.2, alpha=alpha, steps=10, tau=tau, omega=0.0, random_start=False)
    out = attack.perturb_logits(logits, x, target)
    # Sample 0 stops at the first misclassified iterate plus tau steps; sample 1 runs all 10.
    torch.testing.assert_close(out[0], x[0] + (3 + tau) * alpha)
    torch.testing.assert_close(out[1], x[1] + 10 * alpha)
    # Per-sample gradient evaluations: 3 + tau and 10, against 2 x 10 for PGD-10.
    assert attack.last_gradient_count == (3 + tau) + 10

    # The control without early stopping moves sample 0 as far as sample 1.
    pgd_out = PGD(eps=0.2, alpha=alpha, steps=10, random_start=False)(
        lambda z: F.cross_entropy(logits(z), target, reduction="none"), x)
    torch.testing.assert_close(pgd_out[0], x[0] + 10 * alpha)


def test_early_stopped_pgd_returns_misclassified_inputs_unchanged_without_random_start() -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(6, 1, 8, 8, generator=generator)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    with torch.no_grad():
        predicted = model(x).argmax(1)
    target = predicted.clone()
    target[:3] = (predicted[:3] + 1) % 3  # the first three are misclassified from the start
    attack = EarlyStoppedPGD(eps=0.1, steps=5, tau=0, omega=0.0, random_start=False)
    out = attack.perturb_logits(model, x, target)
    torch.testing.assert_close(out[:3], x[:3])
    assert (out[3:] - x[3:]).abs().max() > 0
    assert (out - x).abs().max() <= 0.1 + 1e-6
    assert attack.last_gradient_count < 5 * 6


def test_fat_recipe_defaults_and_dynamic_tau(tmp_path: Path) -> None:
    model = _classifier("fat")
    (callback,) = model.configure_callbacks()
    attack = callback.attack
    assert isinstance(attack, EarlyStoppedPGD)
    assert attack.alpha == pytest.approx(EPS * FAT_STEP_RATIO) and attack.steps == 10
    assert attack.omega == pytest.approx(0.001)
    # FAT.py adjust_tau over its 120 epochs: 0 up to 50, 1 up to 90, 2 after.
    assert [fat_dynamic_tau(e - 1, 120) for e in (1, 50, 51, 90, 91, 120)] == [0, 0, 1, 1, 2, 2]
    assert [fat_dynamic_tau(e, 4) for e in range(4)] == [0, 1, 1, 2]
    taus = []

    class Spy(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            taus.append(attack.tau)

    trainer = _trainer(tmp_path, max_epochs=4, limit_train_batches=1, callbacks=[Spy()])
    trainer.fit(model, datamodule=DigitsDataModule(batch_size=32))
    assert taus == [0, 1, 1, 2]
    model_fixed = _classifier("fat", fat_tau=3)
    assert model_fixed.configure_callbacks()[0].attack.tau == 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"recipe": "free_at", "free_replays": 0}, "free_replays must be an int >= 1, got 0"),
     ({"recipe": "grad_align", "grad_align_lambda": -1.0}, "grad_align_lambda must be a finite number >= 0, got -1.0"),
     ({"recipe": "fat", "fat_tau": -1}, r"fat_tau must be an int >= 0 \(or 'dynamic'\), got -1"),
     ({"recipe": "free_at", "norm": "l2"}, "L-inf only")],
)
def test_bad_fast_recipe_arguments_name_themselves(kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        RobustClassifier(SmallCNN(), mean=[0.5], std=[0.5], **kwargs)


def test_early_stopped_pgd_needs_logits() -> None:
    with pytest.raises(TypeError, match="perturb_logits"):
        EarlyStoppedPGD(eps=0.1)(lambda z: z.sum(1), torch.rand(2, 3))
    assert isinstance(AdversarialTraining(EarlyStoppedPGD(eps=0.1)).attack, EarlyStoppedPGD)
