"""Shared pieces of the callback tests: a plain user LightningModule and tiny data.

The module inherits only ``lightning.pytorch.LightningModule`` and knows nothing about
robust_lightning, which is exactly what the callbacks promise to work with.
"""

from __future__ import annotations

import warnings
from collections import namedtuple
from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.plugins import Precision
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

FEATURES = 16
CLASSES = 3


@pytest.fixture(autouse=True)
def _single_thread(single_thread):
    """Every test in this folder runs on one intra-op thread (tests/conftest.py)."""


@pytest.fixture(autouse=True)
def _quiet_lightning():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*number of training batches.*")
        warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
        warnings.filterwarnings("ignore", message=".*but have no `val_dataloader`.*")
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")
        yield


def teacher_weights(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(CLASSES, FEATURES, generator=g), torch.randn(CLASSES, generator=g)


class PlainClassifier(pl.LightningModule):
    """A user's own module: (x, y) or {"image", "label"} batches, logits out, nothing else."""

    def __init__(self, batchnorm: bool = False, lr: float = 0.0, seed: int = 0) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        if batchnorm:
            layers.append(nn.BatchNorm1d(FEATURES))
        layers.append(nn.Linear(FEATURES, CLASSES))
        self.net = nn.Sequential(*layers)
        weight, bias = teacher_weights(seed)
        with torch.no_grad():
            self.net[-1].weight.copy_(weight)
            self.net[-1].bias.copy_(bias)
        self.lr = lr
        self.seen: list[tuple[int, torch.Tensor, torch.Tensor]] = []  # (epoch, x, y) per training_step
        self.logged: list[tuple[str, int, bool, float]] = []  # (name, epoch, sanity, value)
        self.forward_modes: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.forward_modes.append(self.training)
        return self.net(x)

    @staticmethod
    def unpack(batch):
        if isinstance(batch, dict):
            return batch["image"], batch["label"]
        return batch[0], batch[1]

    def training_step(self, batch, batch_idx):
        x, y = self.unpack(batch)
        self.seen.append((self.current_epoch, x.detach().clone(), y.detach().clone()))
        return F.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = self.unpack(batch)
        self.log("val/acc", (self(x).argmax(1) == y).float().mean())

    def test_step(self, batch, batch_idx):
        x, y = self.unpack(batch)
        self.log("test/acc", (self(x).argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)

    def log(self, name, value, *args, **kwargs):  # records what callbacks log, then logs it
        self.logged.append((name, self.current_epoch, bool(self.trainer.sanity_checking), float(value)))
        return super().log(name, value, *args, **kwargs)


def make_data(n: int = 32, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs in [0.05, 0.95] and the teacher's labels: PlainClassifier is 100% accurate."""
    g = torch.Generator().manual_seed(seed)
    x = 0.05 + 0.9 * torch.rand(n, 1, 4, 4, generator=g)
    weight, bias = teacher_weights()
    y = (x.flatten(1) @ weight.T + bias).argmax(1)
    return x, y


class DictDataset(Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"image": self.x[i], "label": self.y[i], "index": i}


Pair = namedtuple("Pair", ["image", "label"])


class PairDataset(DictDataset):
    def __getitem__(self, i):
        return Pair(self.x[i], self.y[i])


def make_loader(x, y, batch_size: int = 8, dict_batches: bool = False, namedtuples: bool = False,
                **kwargs) -> DataLoader:
    if dict_batches:
        dataset = DictDataset(x, y)
    elif namedtuples:
        dataset = PairDataset(x, y)
    else:
        dataset = TensorDataset(x, y)
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, **kwargs)


def make_trainer(callbacks, root_dir=None, **kwargs) -> pl.Trainer:
    options = dict(
        default_root_dir=root_dir,
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    options.update(kwargs)
    return pl.Trainer(callbacks=callbacks, **options)


def stub_trainer(epoch: int = 0) -> SimpleNamespace:
    """What a callback hook reads from the Trainer, for calling hooks directly."""
    return SimpleNamespace(current_epoch=epoch, global_rank=0, precision_plugin=Precision(),
                           sanity_checking=False)


@pytest.fixture
def helpers(tmp_path) -> SimpleNamespace:
    def trainer_in_tmp_path(callbacks, **kwargs) -> pl.Trainer:
        # anything a callback writes into the run dir lands in tmp_path, never the checkout
        return make_trainer(callbacks, root_dir=str(tmp_path), **kwargs)

    return SimpleNamespace(
        PlainClassifier=PlainClassifier,
        DictDataset=DictDataset,
        make_data=make_data,
        make_loader=make_loader,
        make_trainer=trainer_in_tmp_path,
        tmp_path=tmp_path,
        stub_trainer=stub_trainer,
        FEATURES=FEATURES,
        CLASSES=CLASSES,
    )
