"""LightningDataModules. Every one yields ``[inputs, labels]`` batches with float images in
``[0, 1]``; normalisation is a layer of the model, so attack budgets mean the same everywhere.
"""

from robust_lightning.datamodules._common import InMemoryImageDataModule, TensorImageDataset
from robust_lightning.datamodules.cifar10 import CIFAR10DataModule
from robust_lightning.datamodules.digits import DigitsDataModule

__all__ = [
    "CIFAR10DataModule",
    "DigitsDataModule",
    "InMemoryImageDataModule",
    "TensorImageDataset",
]

from robust_lightning.datamodules.domain_generalization import (  # noqa: E402
    DomainGeneralizationDataModule,
    ImageFolderDataModule,
)
from robust_lightning.datamodules.synthetic_digits import SyntheticDigitsDataModule  # noqa: E402

__all__ += ["DomainGeneralizationDataModule", "ImageFolderDataModule", "SyntheticDigitsDataModule"]
