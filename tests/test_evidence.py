"""End-to-end effect: PGD adversarial training buys robustness on real data (issue #3, item 7)."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from robust_lightning import PGD, RobustClassifier, RobustnessEvaluation, SmallCNN
from robust_lightning.datamodules import DigitsDataModule

EPS = 0.1
EVAL_ATTACK = PGD(eps=EPS, alpha=EPS / 4, steps=10)


def _train_and_test(recipe: str, seed: int, tmp_path: Path) -> dict[str, float]:
    pl.seed_everything(seed, verbose=False)
    model = RobustClassifier(SmallCNN(num_classes=10, in_channels=1), mean=[0.5], std=[0.5],
                             recipe=recipe, eps=EPS, steps=10,
                             optimizer=lambda p: torch.optim.AdamW(p, lr=3e-3, weight_decay=1e-4))
    trainer = pl.Trainer(accelerator="cpu", max_epochs=5, limit_val_batches=0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path, callbacks=[RobustnessEvaluation([EVAL_ATTACK])])
    data = DigitsDataModule(image_size=16, batch_size=64, seed=seed)
    trainer.fit(model, datamodule=data)
    (results,) = trainer.test(model, datamodule=data, verbose=False)
    return results


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pgd_at_beats_standard_training_under_pgd(seed: int, tmp_path: Path) -> None:
    standard = _train_and_test("standard", seed, tmp_path)
    adversarial = _train_and_test("pgd_at", seed, tmp_path)
    key = f"test/robust_acc/{EVAL_ATTACK.name}"
    gain = adversarial[key] - standard[key]
    print(f"seed {seed}: standard clean {standard['test/acc']:.3f} robust {standard[key]:.3f}; "
          f"PGD-AT clean {adversarial['test/acc']:.3f} robust {adversarial[key]:.3f}")
    assert adversarial["test/acc"] > 0.80, adversarial
    assert standard["test/acc"] > 0.80, standard
    assert gain >= 0.15, f"PGD-AT robust accuracy gain {gain:.3f} < 0.15 ({standard} vs {adversarial})"
