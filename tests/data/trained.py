"""Small classifiers trained on sklearn digits in a few seconds, shared by attack tests."""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robust_lightning.datamodules import DigitsDataModule
from robust_lightning.nn import Normalize, SmallCNN


def digits_tensors(split: str, image_size: int = 16, data_seed: int = 0) -> tuple[Tensor, Tensor]:
    """All images/labels of one split of :class:`DigitsDataModule` as float tensors in [0, 1].

    ``data_seed`` is the split seed: effect tests vary it so their seeds also vary the data.
    """
    data = DigitsDataModule(image_size=image_size, batch_size=64, seed=data_seed, augment=False)
    data.setup("fit" if split != "test" else "test")
    dataset = {"train": data.train_dataset, "val": data.val_dataset, "test": data.test_dataset}[split]
    images = dataset.images
    images = images.float().div(255) if images.dtype == torch.uint8 else images.float()
    return images, dataset.labels


@lru_cache(maxsize=4)
def trained_digits_model(seed: int = 0, width: int = 16, epochs: int = 6, data_seed: int = 0) -> nn.Module:
    """A standard (non-robust) SmallCNN on 16x16 digits, in eval mode, ~97% clean accuracy.

    ``data_seed`` picks the train/test split (:func:`digits_tensors`); ``seed`` the weights and order.
    """
    torch.manual_seed(seed)
    images, labels = digits_tensors("train", data_seed=data_seed)
    model = nn.Sequential(Normalize([0.5], [0.5]), SmallCNN(num_classes=10, in_channels=1, width=width))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for index in torch.randperm(len(labels), generator=generator).split(64):
            optimizer.zero_grad()
            F.cross_entropy(model(images[index]), labels[index]).backward()
            optimizer.step()
    return model.eval().requires_grad_(False)
