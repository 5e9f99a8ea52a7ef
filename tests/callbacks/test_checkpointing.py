"""LastCheckpoint: last.ckpt is the newest epoch even when the monitored metric stops improving."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from robust_lightning import LastCheckpoint, load_checkpoint


class _ConstantMetric(pl.LightningModule):
    """Trains a linear layer; its validation metric never changes (no epoch after 0 improves)."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 2)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.layer(x), y)

    def validation_step(self, batch, batch_idx):
        self.log("val/metric", 0.5)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _loader() -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(16, 4, generator=generator)
    return DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=8)


def _trainer(tmp_path: Path, callbacks: list[pl.Callback], max_epochs: int = 3, **kwargs) -> pl.Trainer:
    return pl.Trainer(max_epochs=max_epochs, callbacks=callbacks, default_root_dir=tmp_path, logger=False,
                      enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", **kwargs)


def test_lightning_save_last_stays_at_the_best_epoch_and_last_checkpoint_does_not(tmp_path: Path) -> None:
    # The control: Lightning's own save_last (the mechanism this callback replaces).
    control_dir = tmp_path / "control"
    control = ModelCheckpoint(dirpath=control_dir, monitor="val/metric", mode="max", save_last=True)
    _trainer(tmp_path, [control]).fit(_ConstantMetric(), _loader(), _loader())
    assert load_checkpoint(control_dir / "last.ckpt")["epoch"] == 0, "Lightning's behaviour changed: revisit"

    best = ModelCheckpoint(dirpath=tmp_path / "ours", monitor="val/metric", mode="max")
    last = LastCheckpoint(dirpath=tmp_path / "ours")
    trainer = _trainer(tmp_path, [best, last])
    module = _ConstantMetric()
    trainer.fit(module, _loader(), _loader())
    saved = load_checkpoint(tmp_path / "ours" / "last.ckpt")
    assert saved["epoch"] == 2 and saved["global_step"] == trainer.global_step == 6
    assert torch.equal(saved["state_dict"]["layer.weight"], module.layer.weight.detach())
    assert trainer.checkpoint_callback is best and Path(best.best_model_path).name.startswith("epoch=0")
    assert not list((tmp_path / "ours").glob("*.tmp")), "no temporary file is left behind"


def test_epochs_without_validation_are_saved_too(tmp_path: Path) -> None:
    last = LastCheckpoint(dirpath=tmp_path)
    _trainer(tmp_path, [last], check_val_every_n_epoch=2).fit(_ConstantMetric(), _loader(), _loader())
    assert load_checkpoint(tmp_path / "last.ckpt")["epoch"] == 2


def test_a_last_ckpt_it_did_not_write_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "last.ckpt").write_bytes(b"the user's own file")
    last = LastCheckpoint(dirpath=tmp_path)
    _trainer(tmp_path, [last], max_epochs=2).fit(_ConstantMetric(), _loader(), _loader())
    assert (tmp_path / "last.ckpt").read_bytes() == b"the user's own file"
    assert load_checkpoint(tmp_path / "last-v1.ckpt")["epoch"] == 1


def test_resume_from_last_continues_at_the_next_epoch(tmp_path: Path) -> None:
    _trainer(tmp_path, [LastCheckpoint(dirpath=tmp_path / "a")], max_epochs=2).fit(
        _ConstantMetric(), _loader(), _loader())
    resumed = _trainer(tmp_path, [LastCheckpoint(dirpath=tmp_path / "b")], max_epochs=3)
    resumed.fit(_ConstantMetric(), _loader(), _loader(), ckpt_path=tmp_path / "a" / "last.ckpt")
    assert resumed.current_epoch == 3 and resumed.global_step == 6
    assert load_checkpoint(tmp_path / "b" / "last.ckpt")["epoch"] == 2


def test_fast_dev_run_writes_nothing(tmp_path: Path) -> None:
    _trainer(tmp_path, [LastCheckpoint(dirpath=tmp_path / "c")], fast_dev_run=1).fit(
        _ConstantMetric(), _loader(), _loader())
    assert not (tmp_path / "c" / "last.ckpt").exists()


def test_every_shipped_config_uses_last_checkpoint_not_save_last() -> None:
    configs = sorted((Path(__file__).resolve().parents[2] / "configs").rglob("*.yaml"))
    trained = [c for c in configs if "ModelCheckpoint" in c.read_text() or "LastCheckpoint" in c.read_text()]
    assert len(trained) >= 20
    for config in trained:
        text = config.read_text()
        assert "save_last" not in text, f"{config}: save_last leaves last.ckpt at the best epoch"
        assert "robust_lightning.callbacks.LastCheckpoint" in text, config


@pytest.mark.parametrize("bad", ["not a checkpoint", ""])
def test_cli_refuses_a_corrupt_ckpt_path_by_name(tmp_path: Path, bad: str) -> None:
    from robust_lightning.cli import _check_ckpt_path
    from robust_lightning.errors import CheckpointError

    path = tmp_path / "broken.ckpt"
    path.write_text(bad)
    with pytest.raises(CheckpointError, match=r"ckpt_path '.*broken\.ckpt' is not a valid PyTorch checkpoint") as info:
        _check_ckpt_path(str(path))
    assert "weights_only=False" not in str(info.value)


@pytest.mark.slow
@pytest.mark.ddp
def test_under_ddp_spawn_rank_zero_writes_one_complete_last_ckpt(tmp_path: Path) -> None:
    best = ModelCheckpoint(dirpath=tmp_path, monitor="val/metric", mode="max")
    trainer = _trainer(tmp_path, [best, LastCheckpoint(dirpath=tmp_path)], max_epochs=2, devices=2,
                       strategy="ddp_spawn")
    trainer.fit(_ConstantMetric(), _loader(), _loader())
    assert load_checkpoint(tmp_path / "last.ckpt")["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix in (".ckpt", ".tmp")) == [
        "epoch=0-step=1.ckpt", "last.ckpt"]
