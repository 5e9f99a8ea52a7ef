"""Pieces shared by the in-memory image datamodules.

Both datamodules hold their whole dataset as one tensor (digits: float32, CIFAR-10: uint8) and
differ only in how they read and split it, so the dataset wrapper, the seeded stratified split,
the dataloader construction and the argument checks live here once.
"""

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, RandomSampler

# The argument checks live in robust_lightning._validation; re-exported here for the
# datamodules that import them from this module.
from robust_lightning._validation import (
    check_fraction,
    check_int_at_least,
    check_non_negative_int,
    check_optional_positive_int,
    check_positive_int,
)

__all__ = [
    "EpochShuffleSampler",
    "InMemoryImageDataModule",
    "TensorImageDataset",
    "check_fraction",
    "check_int_at_least",
    "check_non_negative_int",
    "check_optional_positive_int",
    "check_positive_int",
    "generate_once",
    "read_generated_manifest",
    "stratified_permutation",
]


def stratified_permutation(labels: np.ndarray, seed: int) -> np.ndarray:
    """Seeded permutation of ``range(len(labels))`` whose every prefix is class-balanced.

    Each sample gets the key ``(rank within its class + 0.5) / class size`` with a random rank,
    and samples are sorted by that key (random tie-break). Taking the first ``k`` indices then
    gives each class ``k * class_size / n`` samples up to rounding, so callers can cut exact
    split sizes from one permutation and still get stratified splits. The generator is local:
    global RNG state is neither read nor changed.

    Args:
        labels: Integer class labels, shape ``(n,)``.
        seed: Seed of the local ``numpy.random.Generator``.

    Returns:
        An int64 array holding a permutation of ``range(n)``.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    keys = np.empty(len(labels), dtype=np.float64)
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        ranks = rng.permutation(len(members))
        keys[members] = (ranks + 0.5) / len(members)
    tie_break = rng.random(len(labels))
    # lexsort sorts by the last key first.
    return np.lexsort((tie_break, keys)).astype(np.int64)


class TensorImageDataset(Dataset[tuple[Tensor, Tensor]]):
    """Images and labels held in memory, yielding ``(image, label)`` pairs.

    uint8 images are converted to float in ``[0, 1]`` per item, after the transform, so a
    dataset can be stored compactly and augmented with uint8 kernels; float images are
    returned as they are (after the transform).

    Args:
        images: ``(N, C, H, W)`` uint8 or floating tensor.
        labels: ``(N,)`` integer tensor; stored as int64.
        transform: Optional callable applied to one ``(C, H, W)`` image before conversion.

    Raises:
        ValueError: If shapes or dtypes do not fit.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        transform: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        if images.ndim != 4:
            raise ValueError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")
        if images.dtype != torch.uint8 and not images.is_floating_point():
            raise ValueError(f"images must be uint8 or floating point, got {images.dtype}")
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(
                f"labels must have shape ({images.shape[0]},) to match images, "
                f"got {tuple(labels.shape)}"
            )
        if labels.is_floating_point() or labels.is_complex():
            raise ValueError(f"labels must be an integer tensor, got {labels.dtype}")
        self.images = images
        self.labels = labels.to(torch.int64)
        self.transform = transform

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        if image.dtype == torch.uint8:
            image = image.to(torch.float32).div_(255.0)
        return image, self.labels[index]


class EpochShuffleSampler(RandomSampler):
    """A shuffle that is a pure function of ``(seed, epoch)``.

    A plain ``shuffle=True`` loader draws its order from the global RNG, whose state a resumed
    run cannot reproduce; this sampler makes epoch ``e`` of a run resumed from a checkpoint see
    exactly the batches of the uninterrupted run. Lightning calls :meth:`set_epoch` before
    every epoch; it is a ``RandomSampler``, so under DDP Lightning still swaps in a shuffling
    ``DistributedSampler`` (which is seeded per epoch the same way).

    Args:
        data_source: the dataset (only its length is used).
        seed: base seed; ``None`` takes ``torch.initial_seed()`` (what ``seed_everything`` set).
    """

    def __init__(self, data_source: Dataset, seed: int | None = None) -> None:
        super().__init__(data_source)
        self.seed = int(torch.initial_seed() if seed is None else seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):  # type: ignore[override]
        generator = torch.Generator().manual_seed((self.seed + 1_000_003 * self.epoch) % 2**63)
        yield from torch.randperm(len(self.data_source), generator=generator).tolist()


class InMemoryImageDataModule(LightningDataModule):
    """Dataloader plumbing for datamodules whose ``setup`` fills three in-memory datasets.

    Subclasses set ``train_dataset``, ``val_dataset`` and ``test_dataset`` in ``setup``;
    ``predict_dataloader`` serves the test set.

    Args:
        batch_size: Training batch size.
        eval_batch_size: Batch size for validation, test and predict; ``None`` uses
            ``batch_size``.
        num_workers: DataLoader worker processes; 0 loads in the main process.

    Raises:
        ValueError: If an argument is out of range.
    """

    def __init__(
        self,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.eval_batch_size = (
            self.batch_size
            if eval_batch_size is None
            else check_positive_int("eval_batch_size", eval_batch_size)
        )
        self.num_workers = check_non_negative_int("num_workers", num_workers)
        self.train_dataset: TensorImageDataset | None = None
        self.val_dataset: TensorImageDataset | None = None
        self.test_dataset: TensorImageDataset | None = None

    def _loader(
        self, dataset: TensorImageDataset | None, split: str, batch_size: int, shuffle: bool
    ) -> DataLoader[tuple[Tensor, Tensor]]:
        if dataset is None:
            raise RuntimeError(
                f"{type(self).__name__} has no {split} set yet: call setup() first "
                "(the Trainer does it for you; by hand, e.g. dm.setup('fit'))"
            )
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=EpochShuffleSampler(dataset) if shuffle else None,
            num_workers=self.num_workers,
            # Re-forking workers every epoch costs more than the tiny datasets themselves.
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader[tuple[Tensor, Tensor]]:
        """Shuffled training batches ``[images, labels]``, reproducible per epoch after resuming."""
        return self._loader(self.train_dataset, "train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader[tuple[Tensor, Tensor]]:
        """Validation batches ``[images, labels]`` in a fixed order."""
        return self._loader(self.val_dataset, "validation", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader[tuple[Tensor, Tensor]]:
        """Test batches ``[images, labels]`` in a fixed order."""
        return self._loader(self.test_dataset, "test", self.eval_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader[tuple[Tensor, Tensor]]:
        """The test set, for ``Trainer.predict``."""
        return self._loader(self.test_dataset, "test", self.eval_batch_size, shuffle=False)


GENERATED_MANIFEST = "manifest.json"


def read_generated_manifest(root: Path) -> dict[str, Any] | None:
    """The manifest of a generated dataset folder, or ``None`` when absent or unreadable."""
    try:
        return json.loads((root / GENERATED_MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def generate_once(
    root: str | os.PathLike[str],
    fingerprint: dict[str, Any],
    write: Callable[[Path], dict[str, Any] | None],
    overwrite: bool = False,
) -> Path:
    """Materialise a generated dataset in ``root`` unless one with the same parameters is there.

    ``write(tmp)`` fills a temporary sibling folder (and may return extra manifest entries);
    the folder is then renamed into place, so concurrent processes (pytest-xdist workers, DDP
    ranks) never see a half-written dataset. ``root`` is only replaced when it holds a
    generated dataset of other parameters; a folder without our manifest is never touched.

    Raises:
        ValueError: If ``root`` exists, is not empty and holds no generated dataset.
    """
    root = Path(root)
    manifest = read_generated_manifest(root)
    if manifest is not None and manifest.get("params") == fingerprint and not overwrite:
        return root
    if root.exists() and any(root.iterdir()) and manifest is None:
        raise ValueError(
            f"root {root} exists and is not a generated dataset (no {GENERATED_MANIFEST}); choose another root"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        extra = write(tmp) or {}
        (tmp / GENERATED_MANIFEST).write_text(json.dumps({"params": fingerprint, **extra}, indent=2))
        if not overwrite and (read_generated_manifest(root) or {}).get("params") == fingerprint:
            # Another process put the same dataset in place while we wrote ours: keep theirs,
            # it may already be being read.
            return root
        if root.exists():
            # Ours (it has a manifest) but stale or overwrite requested: replace it.
            stale = root.with_name(f".{root.name}.stale-{os.getpid()}")
            os.replace(root, stale)
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.replace(tmp, root)
        except OSError:
            # Another process renamed its identical dataset into place first: keep theirs.
            if (read_generated_manifest(root) or {}).get("params") != fingerprint:
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root
