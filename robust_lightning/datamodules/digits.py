"""scikit-learn's 8x8 handwritten digits as a LightningDataModule.

The data ships inside scikit-learn (no download), is real (1,797 images of 10 classes) and is
small enough to train and attack in seconds on a CPU, which makes it the dataset of the tests,
the quick configs and the effect tests.
"""

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms import v2
from typing_extensions import override

from robust_lightning._validation import check_bool, check_choice
from robust_lightning.datamodules._common import (
    InMemoryImageDataModule,
    TensorImageDataset,
    check_fraction,
    check_int_at_least,
    check_non_negative_int,
    stratified_permutation,
)
from robust_lightning.datamodules._records import check_image_dataset

__all__ = ["DigitsDataModule"]

# load_digits stores 4-bit intensities (0..16), not 0..255.
_DIGITS_MAX_VALUE = 16.0
_SOURCE_SIZE = 8


class DigitsDataModule(InMemoryImageDataModule):
    """scikit-learn's handwritten digits, upsampled, split into train/val/test.

    Images are float32 in ``[0, 1]`` of shape ``(channels, image_size, image_size)``, labels
    int64 in ``0..9``. Batches are ``[images, labels]``.

    The split is stratified and seeded with a local generator (global RNG state untouched):
    the test set is cut first, then validation, so changing ``val_fraction`` does not change
    the test set. Indices into ``sklearn.datasets.load_digits()`` order are kept in
    ``split_indices`` after ``setup``.

    Args:
        image_size: Side of the square output images (>= 8). The 8x8 originals are upsampled
            bilinearly (``align_corners=False``, no antialiasing) and clamped to ``[0, 1]``.
        val_fraction: Fraction of all images used for validation, in ``[0, 1)``.
        test_fraction: Fraction of all images used for testing, in ``[0, 1)``; the two
            fractions must sum to less than 1.
        seed: Seed of the split.
        batch_size: Training batch size.
        eval_batch_size: Batch size for validation, test and predict; ``None`` uses
            ``batch_size``.
        num_workers: DataLoader worker processes.
        augment: Randomly translate training images by up to ``max(1, image_size // 8)``
            pixels (zero padding, then a random crop). No flips: a mirrored digit is a
            different symbol. Validation and test images are never augmented.
        channels: 1 for greyscale, 3 to repeat the grey channel for RGB models.

    Raises:
        ValueError: If an argument is out of range.

    Example:
        >>> dm = DigitsDataModule(image_size=16, batch_size=64)
        >>> dm.setup("fit")
        >>> images, labels = next(iter(dm.train_dataloader()))
        >>> images.shape, labels.dtype
        (torch.Size([64, 1, 16, 16]), torch.int64)
    """

    def __init__(
        self,
        image_size: int = 16,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        seed: int = 0,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        augment: bool = False,
        channels: int = 1,
    ) -> None:
        super().__init__(
            batch_size=batch_size, eval_batch_size=eval_batch_size, num_workers=num_workers
        )
        self.image_size = check_int_at_least(
            "image_size", image_size, _SOURCE_SIZE, reason="the digits are 8x8"
        )
        self.val_fraction = check_fraction("val_fraction", val_fraction)
        self.test_fraction = check_fraction("test_fraction", test_fraction)
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError(
                "val_fraction + test_fraction must be < 1 to leave training images, got "
                f"{self.val_fraction} + {self.test_fraction}"
            )
        self.seed = check_non_negative_int("seed", seed)
        self.augment = check_bool("augment", augment)
        self.channels = int(check_choice("channels", channels, (1, 3)))
        self.split_indices: dict[str, torch.Tensor] = {}
        self.save_hyperparameters()

    @property
    def num_classes(self) -> int:
        """Number of classes (10)."""
        return 10

    @property
    def classes(self) -> list[str]:
        """Class names, ``"0"`` to ``"9"``."""
        return [str(digit) for digit in range(10)]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """Shape ``(C, H, W)`` of one image."""
        return (self.channels, self.image_size, self.image_size)

    def _load_images(self) -> tuple[torch.Tensor, torch.Tensor]:
        # Imported here so importing the package does not pay for sklearn.
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = torch.from_numpy(np.asarray(digits.images, dtype=np.float32))
        images = (images / _DIGITS_MAX_VALUE).unsqueeze(1)
        if self.image_size != _SOURCE_SIZE:
            images = F.interpolate(
                images,
                size=(self.image_size, self.image_size),
                mode="bilinear",
                align_corners=False,
                antialias=False,
            )
            # Bilinear interpolation is convex, but keep the [0, 1] contract exact.
            images = images.clamp_(0.0, 1.0)
        if self.channels == 3:
            images = images.repeat(1, 3, 1, 1)
        labels = torch.from_numpy(np.asarray(digits.target, dtype=np.int64))
        return images.contiguous(), labels

    def _train_transform(self) -> Any:
        if not self.augment:
            return None
        padding = max(1, self.image_size // 8)
        return v2.RandomCrop(self.image_size, padding=padding, fill=0.0)

    @override
    def setup(self, stage: str | None = None) -> None:
        """Loads, resizes and splits all images once; later calls are no-ops.

        Args:
            stage: Lightning stage; every stage gets all three splits (the data is tiny).
        """
        if self.train_dataset is not None:
            return
        images, labels = self._load_images()
        check_image_dataset(images, labels, num_classes=self.num_classes, image_shape=self.image_shape,
                            source="sklearn digits")
        total = labels.shape[0]
        n_test = round(self.test_fraction * total)
        n_val = round(self.val_fraction * total)
        order = torch.from_numpy(stratified_permutation(labels.numpy(), self.seed))
        self.split_indices = {
            "test": order[:n_test].sort().values,
            "val": order[n_test : n_test + n_val].sort().values,
            "train": order[n_test + n_val :].sort().values,
        }

        def subset(split: str, transform: Any = None) -> TensorImageDataset:
            index = self.split_indices[split]
            return TensorImageDataset(images[index], labels[index], transform=transform)

        self.test_dataset = subset("test")
        self.val_dataset = subset("val")
        self.train_dataset = subset("train", self._train_transform())
