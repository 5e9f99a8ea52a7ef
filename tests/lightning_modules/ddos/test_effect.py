"""Effect test: constrained adversarial training keeps DDoS flows detected under the constrained attack.

A shorter run of the README table's setting (benchmarks/ddos_synthetic.py): an MLP on 1,500
synthetic CIC-IDS2017-style flows (read through the CSV loader), 6 epochs, trained with the
standard recipe and with constrained PGD-AT (eps = 0.7), then tested on the held-out split with
every attack flow replaced by the constrained attack's output (eps = 0.7). Standard training
leaves flows that appended packets and delays push across the boundary; adversarial training
learns to rely on what the attacker cannot change.
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from robust_lightning.datamodules.flows import DEFAULT_FEATURES, FlowDataModule
from robust_lightning.lightning_modules.ddos import DDoSDetector, TabularMLP

KEY = "test/recall_adv/cpgd10_eps0.7"


def detection_under_attack(recipe: str, seed: int, root: Path, flows: int = 1500, epochs: int = 6) -> dict[str, float]:
    pl.seed_everything(seed, verbose=False)
    data = FlowDataModule(str(root / "cicids2017"), synthetic="cicids2017", synthetic_flows=flows, synthetic_files=1,
                          seed=seed, batch_size=64, eval_batch_size=1024)
    model = DDoSDetector(TabularMLP(len(DEFAULT_FEATURES), hidden=(64, 32)), recipe=recipe, eps=0.7, steps=3,
                         search=8, eval_eps=[0.7], eval_steps=10, eval_restarts=2, eval_search=32,
                         optimizer=lambda p: torch.optim.AdamW(p, lr=3e-3, weight_decay=1e-4))
    trainer = pl.Trainer(accelerator="cpu", max_epochs=epochs, limit_val_batches=0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule=data)
    (results,) = trainer.test(model, datamodule=data, verbose=False)
    return results


@pytest.mark.slow
def test_constrained_adversarial_training_raises_attacked_recall(tmp_path: Path, single_thread: None) -> None:
    for seed in (0, 1):
        standard = detection_under_attack("standard", seed, tmp_path)
        robust = detection_under_attack("constrained_at", seed, tmp_path)
        print(f"seed {seed}: standard recall {standard['test/recall']:.3f} attacked {standard[KEY]:.3f}; "
              f"constrained AT recall {robust['test/recall']:.3f} attacked {robust[KEY]:.3f}")
        # Measured with this exact setting, seeds 0/1/2: attacked recall standard 0.091/0.417/0.278,
        # constrained AT 0.947/0.840/0.952 (clean 0.979/0.968/0.989 vs 0.979/0.925/0.984); the
        # smallest gain (0.42) leaves 0.17 of slack over the 0.25 margin.
        assert robust[KEY] >= standard[KEY] + 0.25, (seed, standard, robust)
        assert robust["test/recall"] > 0.85 and standard["test/recall"] > 0.85
