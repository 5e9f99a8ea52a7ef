"""Attack callbacks under multi-process data parallelism on CPU (gloo)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from robust_lightning import PGD, RobustClassifier, RobustnessEvaluation, SmallCNN
from robust_lightning.datamodules import DigitsDataModule

ATTACK = PGD(eps=0.1, alpha=0.05, steps=3)


@pytest.mark.slow
@pytest.mark.ddp
def test_adversarial_training_and_evaluation_under_ddp_spawn(tmp_path: Path) -> None:
    pl.seed_everything(0, verbose=False)
    model = RobustClassifier(SmallCNN(num_classes=10, in_channels=1, width=8, hidden=32), mean=[0.5],
                             std=[0.5], recipe="pgd_at", eps=0.1, steps=3,
                             optimizer=partial(torch.optim.AdamW, lr=3e-3))
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", max_epochs=1,
                         limit_train_batches=4, limit_val_batches=2, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path,
                         callbacks=[RobustnessEvaluation([ATTACK])])
    data = DigitsDataModule(image_size=16, batch_size=32)
    trainer.fit(model, datamodule=data)
    metrics = trainer.callback_metrics
    for name in ("train/loss", "train/acc_epoch", "val/acc", "val/robust_acc/clean",
                 f"val/robust_acc/{ATTACK.name}"):
        assert name in metrics, f"{name} missing from {sorted(metrics)}"
    assert float(metrics[f"val/robust_acc/{ATTACK.name}"]) <= float(metrics["val/robust_acc/clean"])


def _validate_digits(devices: int, tmp_path: Path) -> dict[str, float]:
    from torch.utils.data import DataLoader, TensorDataset

    from robust_lightning import APGD, AutoAttack
    from tests.data.trained import digits_tensors, trained_digits_model

    # A deterministic evaluation: no random start, a fixed model, the same 128 samples (even
    # across 2 ranks, so the distributed sampler pads nothing).
    model = RobustClassifier(trained_digits_model(seed=0, width=16)[1], mean=[0.5], std=[0.5]).eval()
    x, y = digits_tensors("test")
    loader = DataLoader(TensorDataset(x[:128], y[:128]), batch_size=16)
    attacks = [PGD(eps=0.05, alpha=0.0125, steps=5, random_start=False), APGD(eps=0.05, steps=5, random_start=False)]
    # An AutoAttack entry (deterministic members) is sharded and reduced like any other attack.
    attacks.append(AutoAttack(eps=0.05, members=[
        ("apgd-ce", APGD(eps=0.05, steps=5, random_start=False)),
        ("apgd-dlr", APGD(eps=0.05, steps=5, loss="dlr", random_start=False))]))
    # worst_case: ranks hold different numbers of still-robust samples after the first attack.
    callback = RobustnessEvaluation(attacks, worst_case=True)
    strategy = "ddp_spawn" if devices > 1 else "auto"
    trainer = pl.Trainer(accelerator="cpu", devices=devices, strategy=strategy, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path, callbacks=[callback])
    (results,) = trainer.validate(model, loader, verbose=False)
    return {k: float(v) for k, v in results.items()}


@pytest.mark.slow
@pytest.mark.ddp
def test_two_process_robust_accuracy_equals_one_process(tmp_path: Path) -> None:
    one = _validate_digits(1, tmp_path)
    two = _validate_digits(2, tmp_path)
    keys = [k for k in one if k.startswith("val/robust_acc/")]
    assert len(keys) == 5, keys  # clean, pgd, apgd, autoattack, worst case
    for key in keys:
        assert two[key] == pytest.approx(one[key], abs=1e-6), (key, one[key], two[key])
    assert 0.0 < one["val/robust_acc/worst_case_linf_eps0.05"] < one["val/robust_acc/clean"]
