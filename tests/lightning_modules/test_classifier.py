"""RobustClassifier: recipes, TRADES protocol overrides, errors, checkpoints."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robust_lightning import FGSM, PGD, AdversarialTraining, RobustClassifier, SmallCNN
from robust_lightning.datamodules import DigitsDataModule
from robust_lightning.lightning_modules.classifier import TRADES_START_STD


def _classifier(recipe: str = "standard", **kwargs) -> RobustClassifier:
    torch.manual_seed(0)
    return RobustClassifier(SmallCNN(num_classes=10, in_channels=1, width=8, hidden=16),
                            mean=[0.5], std=[0.5], recipe=recipe, eps=0.1, **kwargs)


def _trainer(tmp_path: Path, **kwargs) -> pl.Trainer:
    defaults = dict(accelerator="cpu", max_epochs=1, limit_train_batches=2, limit_val_batches=1,
                    logger=False, enable_checkpointing=False, enable_progress_bar=False,
                    enable_model_summary=False, default_root_dir=tmp_path)
    return pl.Trainer(**{**defaults, **kwargs})


def test_standard_recipe_adds_no_attack() -> None:
    assert _classifier("standard").configure_callbacks() == []


@pytest.mark.parametrize(
    ("recipe", "kind", "alpha", "start"),
    [("pgd_at", PGD, 0.025, True), ("fgsm_rs", FGSM, None, True), ("trades", PGD, 0.025, TRADES_START_STD)],
)
def test_adversarial_recipes_attach_their_attack(recipe, kind, alpha, start) -> None:
    callbacks = _classifier(recipe).configure_callbacks()
    assert len(callbacks) == 1 and isinstance(callbacks[0], AdversarialTraining)
    attack = callbacks[0].attack
    assert isinstance(attack, kind) and attack.eps == pytest.approx(0.1)
    assert attack.random_start == start
    if alpha is not None:
        assert attack.alpha == pytest.approx(alpha)


def test_fgsm_rs_steps_one_and_a_quarter_eps() -> None:
    """Wong et al. 2020: alpha = 1.25 eps from a uniform start; a linear model makes it exact."""
    attack = _classifier("fgsm_rs").configure_callbacks()[0].attack
    x = torch.full((4, 3), 0.5)
    w = torch.tensor([1.0, -1.0, 0.0])
    generator = torch.Generator().manual_seed(0)
    start = 0.5 + (2 * torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) - 1) * 0.1
    x_adv = attack(lambda z: z @ w, x, generator=generator)
    expected = torch.clamp(start + 0.125 * torch.sign(w), 0.4, 0.6)
    torch.testing.assert_close(x_adv, expected)


def test_trades_loss_matches_equation_5(tmp_path: Path) -> None:
    model = _classifier("trades", trades_beta=3.0)
    trainer = _trainer(tmp_path)
    model.trainer = trainer
    trainer.state.stage = "train"  # makes trainer.training True, as inside fit's training loop
    model.log = lambda *args, **kwargs: None  # type: ignore[method-assign]  # no loop to log to
    x = torch.rand(6, 1, 16, 16)
    y = torch.randint(0, 10, (6,))
    x_adv = (x + 0.05).clamp(0, 1)
    batch = model.with_adversarial_inputs([x, y], x_adv)
    assert len(batch) == 3 and batch[2] is x_adv and batch[0] is x

    loss = model.training_step(batch, 0)
    logits, logits_adv = model(x), model(x_adv)
    expected = F.cross_entropy(logits, y) + 3.0 * F.kl_div(
        F.log_softmax(logits_adv, 1), F.softmax(logits, 1), reduction="batchmean")
    torch.testing.assert_close(loss, expected)

    # The inner maximisation's loss is the per-sample KL to the clean prediction.
    with torch.no_grad():
        per_sample = model.attack_loss(x_adv, [x, y])
        reference = F.kl_div(F.log_softmax(model(x_adv), 1), F.softmax(model(x), 1),
                             reduction="none").sum(1)
    torch.testing.assert_close(per_sample, reference)
    assert torch.allclose(model.attack_loss(x, [x, y]), torch.zeros(6), atol=1e-6)


def test_trades_evaluation_attacks_use_cross_entropy() -> None:
    model = _classifier("trades")
    x, y = torch.rand(5, 1, 16, 16), torch.randint(0, 10, (5,))
    with torch.no_grad():
        torch.testing.assert_close(model.attack_loss(x, [x, y]), F.cross_entropy(model(x), y, reduction="none"))
    assert len(model.with_adversarial_inputs([x, y], x)) == 2


@pytest.mark.parametrize("recipe", ["standard", "pgd_at", "fgsm_rs", "trades"])
def test_each_recipe_trains(recipe: str, tmp_path: Path) -> None:
    model = _classifier(recipe, steps=2)
    before = [p.detach().clone() for p in model.parameters()]
    trainer = _trainer(tmp_path)
    trainer.fit(model, datamodule=DigitsDataModule(batch_size=32))
    assert trainer.state.finished
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=False))
    if recipe == "trades":
        assert "train/trades_kl" in trainer.callback_metrics


def test_scheduler_from_config_is_stepped(tmp_path: Path) -> None:
    model = _classifier(optimizer=lambda p: torch.optim.SGD(p, lr=0.1),
                        lr_scheduler=lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=1, gamma=0.5),
                        scheduler_interval="step")
    trainer = _trainer(tmp_path, limit_val_batches=0)
    trainer.fit(model, datamodule=DigitsDataModule(batch_size=32))
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"recipe": "madry"}, "recipe must be one of"), ({"num_classes": 1}, "num_classes"),
     ({"trades_beta": -1.0}, "trades_beta"), ({"eps": "eight"}, "eps"),
     ({"scheduler_interval": "batch"}, "scheduler_interval"), ({"mean": [0.5, 0.5]}, "mean and std")],
)
def test_bad_arguments_name_themselves(kwargs: dict, message: str) -> None:
    args = {"backbone": SmallCNN(), "mean": [0.5], "std": [0.5], **kwargs}
    with pytest.raises(ValueError, match=message):
        RobustClassifier(**args)


def test_backbone_must_be_a_module() -> None:
    with pytest.raises(TypeError, match="backbone must be an nn.Module"):
        RobustClassifier("small_cnn")  # type: ignore[arg-type]


def test_backbone_with_wrong_number_of_classes_is_reported() -> None:
    model = RobustClassifier(SmallCNN(num_classes=7), num_classes=10, mean=[0.5], std=[0.5])
    with pytest.raises(ValueError, match="num_classes=10"):
        model(torch.rand(2, 1, 16, 16))


def test_wrong_channel_count_is_reported() -> None:
    with pytest.raises(ValueError, match=r"Normalize expects images \(B, 1, H, W\)"):
        _classifier()(torch.rand(2, 3, 16, 16))


def test_checkpoint_loads_weights_only(tmp_path: Path) -> None:
    model = _classifier("pgd_at", steps=1)
    trainer = _trainer(tmp_path, enable_checkpointing=True, limit_val_batches=0)
    trainer.fit(model, datamodule=DigitsDataModule(batch_size=32))
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["hyper_parameters"]["recipe"] == "pgd_at"
    # The callback stores its state under its state_key, "AdversarialTraining{'attack': ...}".
    assert any(key.startswith("AdversarialTraining") for key in checkpoint["callbacks"])
    restored = _classifier("pgd_at", steps=1)
    restored.load_state_dict(checkpoint["state_dict"])
    x = torch.rand(3, 1, 16, 16)
    model.eval(), restored.eval()
    torch.testing.assert_close(model(x), restored(x))


def test_predict_returns_probabilities(tmp_path: Path) -> None:
    model = _classifier()
    predictions = _trainer(tmp_path).predict(model, datamodule=DigitsDataModule(batch_size=64))
    probs = torch.cat(predictions)
    assert probs.shape[1] == 10
    torch.testing.assert_close(probs.sum(1), torch.ones(len(probs)))


def test_user_module_wrapping_shows_nn_module_is_pure() -> None:
    """The backbone and Normalize are plain nn.Modules, usable without Lightning."""
    model = _classifier()
    assert isinstance(model.model, nn.Sequential)
    assert model.model(torch.rand(2, 1, 16, 16)).shape == (2, 10)
