"""A killed run resumed with ``--ckpt_path last`` continues exactly (issue 5, deliverable 6)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from robust_lightning.cli import main

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "classifier" / "digits_pgd_at.yaml"
LOGGER = ["--trainer.logger=lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir=runs",
          "--trainer.logger.name=resume"]


def _fit(*extra: str):
    return main(["fit", "--config", str(CONFIG), "--trainer.accelerator=cpu", "--trainer.limit_train_batches=3",
                 "--trainer.limit_val_batches=2", "--trainer.enable_progress_bar=false", *LOGGER, *extra])


def _epoch_metrics(run_dir: Path, epoch: int) -> dict[str, float]:
    """Every metric CSVLogger wrote for ``epoch`` (train and validation rows merged)."""
    merged: dict[str, float] = {}
    with (run_dir / "metrics.csv").open() as handle:
        for row in csv.DictReader(handle):
            if row.get("epoch") == str(epoch):
                merged.update({k: float(v) for k, v in row.items() if v not in ("", None) and k != "step"})
    return merged


@pytest.mark.slow
def test_resumed_run_reproduces_the_uninterrupted_epoch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    uninterrupted = _fit("--trainer.max_epochs=2")
    killed = _fit("--trainer.max_epochs=1")
    killed_dir = Path(killed.trainer.log_dir)
    last = killed_dir / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    states = {key: value for key, value in checkpoint["callbacks"].items() if key.startswith("AdversarialTraining")}
    assert states and all("generator_state" in s for s in states.values()), checkpoint["callbacks"].keys()
    before = last.read_bytes()

    resumed = _fit("--trainer.max_epochs=2", "--ckpt_path=last")
    resumed_dir = Path(resumed.trainer.log_dir)
    assert resumed_dir != killed_dir, "a resumed run writes a new version folder"
    assert last.read_bytes() == before, "the interrupted run's checkpoint is never touched"
    assert resumed.trainer.current_epoch == 2

    expected = _epoch_metrics(Path(uninterrupted.trainer.log_dir), 1)
    actual = _epoch_metrics(resumed_dir, 1)
    assert {"val/acc", "val/loss", "train/acc_epoch", "val/robust_acc/pgd10_linf_eps0.1"} <= set(expected)
    for key, value in expected.items():
        assert actual[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


def test_last_without_an_earlier_run_starts_from_scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning, match="starting from scratch"):
        cli = _fit("--trainer.max_epochs=1", "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=0",
                   "--ckpt_path=last")
    assert cli.trainer.current_epoch == 1
