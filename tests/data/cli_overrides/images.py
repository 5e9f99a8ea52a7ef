"""Generated stand-ins for the image datasets the classifier configs name."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.data.cifar10 import write_fake_cifar10


def _cifar10(tmp_path: Path) -> list[str]:
    root = write_fake_cifar10(tmp_path / "cifar10", n_train_per_batch=8, n_test=16)
    return [f"--data.init_args.data_dir={root}", "--data.init_args.num_workers=0",
            "--data.init_args.batch_size=8"]


def _digits_surrogate(workdir: Path) -> None:
    """The transfer config loads a surrogate trained by digits_surrogate.yaml; write a small one."""
    from robust_lightning.lightning_modules.classifier import RobustClassifier
    from robust_lightning.nn.backbones import SmallCNN

    torch.manual_seed(1)
    surrogate = RobustClassifier(SmallCNN(num_classes=10, in_channels=1, width=16), mean=[0.5], std=[0.5])
    path = workdir / "runs" / "digits_surrogate" / "surrogate.ckpt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": surrogate.state_dict()}, path)


OVERRIDES = {"CIFAR10DataModule": _cifar10}
EXTRA_SETUP = {"sharpening/digits_transfer.yaml": _digits_surrogate}
