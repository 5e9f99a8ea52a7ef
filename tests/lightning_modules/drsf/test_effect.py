"""Effect test: trained on printed digit renders only, DRSF reads real handwritten digits; ERM does not.

The source is :class:`SyntheticDigitsDataModule` in a "printed" look (dark ink on a light
background, the natural look of rendered text); the target is scikit-learn's scanned digits
(light ink on black), never seen in training. ERM learns the source's polarity and falls to
about chance on the target; DRSF's random-convolution view (random contrast and polarity), the
soft-fusion discriminators and the consistency loss make the features ignore it. A shorter run
(12 px, 1,500 renders, 3 epochs; ~10 s of CPU, 20-60 s wall on a busy shared 2-core CPU) of the
setting of the README table (benchmarks/drsf_digits.py --source-style printed).
"""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

from robust_lightning.datamodules import (
    DigitsDataModule,
    DomainGeneralizationDataModule,
    SyntheticDigitsDataModule,
)
from robust_lightning.lightning_modules.drsf import DigitCNN, DRSFClassifier

PRINTED = {"background_range": (0.75, 1.0), "foreground_range": (0.0, 0.3)}


def _target_accuracy(method: str, seed: int, num_train: int = 1500, batch_size: int = 32, epochs: int = 3,
                     width: int = 16, lr: float = 2e-3, image_size: int = 12) -> float:
    pl.seed_everything(seed, verbose=False)
    source = SyntheticDigitsDataModule(num_train=num_train, num_val=0, num_test=0, image_size=image_size, seed=seed,
                                       batch_size=batch_size, **PRINTED)
    target = DigitsDataModule(image_size=image_size, val_fraction=0.0, test_fraction=0.5, seed=seed, eval_batch_size=500)
    data = DomainGeneralizationDataModule(source, {"real": target}, evaluate_source=False)
    model = DRSFClassifier(DigitCNN(num_classes=10, width=width), method=method,
                           optimizer=lambda p: torch.optim.AdamW(p, lr=lr, weight_decay=1e-4))
    trainer = pl.Trainer(accelerator="cpu", max_epochs=epochs, limit_val_batches=0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule=data)
    return float(trainer.test(model, datamodule=data, verbose=False)[0]["test/acc/real"])


@pytest.mark.slow
def test_drsf_beats_erm_on_real_digits_when_trained_on_printed_renders(single_thread: None) -> None:
    erm, drsf = _target_accuracy("erm", seed=0), _target_accuracy("drsf", seed=0)
    # Measured with this exact setting, seeds 0/1/2: ERM 0.125/0.144/0.145, DRSF 0.350/0.396/0.432;
    # ERM stays near chance (0.1), so a 0.15 margin leaves ~0.1 of slack on the worst seed.
    assert drsf > erm + 0.15, f"DRSF {drsf:.3f} vs ERM {erm:.3f} on real digits"
    assert drsf > 0.25
