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
