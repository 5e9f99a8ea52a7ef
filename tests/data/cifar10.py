"""Writes small fake CIFAR-10 python batches in exactly the official on-disk format.

The real files are Python 2 pickles (protocol 2) of dicts with bytes keys: ``b"data"`` a uint8
array ``(N, 3072)`` holding the red, green and blue 32x32 planes row-major, ``b"labels"`` a
list of ints, ``b"batch_label"`` and ``b"filenames"`` bytes; ``batches.meta`` holds
``b"label_names"``. Tests build them on the fly so the repository carries no binaries.

Run as a script to write a fake dataset: ``python -m tests.data.cifar10 OUT_DIR``.
"""

import pickle
import sys
from pathlib import Path

import numpy as np

__all__ = ["LABEL_NAMES", "TRAIN_FILES", "write_fake_cifar10"]

LABEL_NAMES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
TRAIN_FILES: tuple[str, ...] = tuple(f"data_batch_{i}" for i in range(1, 6))


def _batch(rng: np.random.Generator, n: int, batch_label: str, start: int) -> dict[bytes, object]:
    # Balanced labels (every class present once n >= 10), shuffled like the real batches.
    labels = rng.permutation(np.arange(n) % len(LABEL_NAMES))
    return {
        b"batch_label": batch_label.encode(),
        b"labels": [int(label) for label in labels],
        b"data": rng.integers(0, 256, size=(n, 3 * 32 * 32), dtype=np.uint8),
        b"filenames": [f"fake_{start + i:05d}.png".encode() for i in range(n)],
    }


def _dump(obj: object, path: Path) -> None:
    with path.open("wb") as file:
        pickle.dump(obj, file, protocol=2)


def write_fake_cifar10(
    root: Path, n_train_per_batch: int = 20, n_test: int = 20, seed: int = 0
) -> Path:
    """Writes fake ``data_batch_1..5``, ``test_batch`` and ``batches.meta``.

    Args:
        root: Folder under which ``cifar-10-batches-py/`` is created.
        n_train_per_batch: Images in each of the 5 training batches.
        n_test: Images in the test batch.
        seed: Seed of the random pixels and label order.

    Returns:
        The ``root/cifar-10-batches-py`` folder.
    """
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index, name in enumerate(TRAIN_FILES):
        batch = _batch(
            rng, n_train_per_batch, f"training batch {index + 1} of 5", index * n_train_per_batch
        )
        _dump(batch, folder / name)
    _dump(_batch(rng, n_test, "testing batch 1 of 1", 0), folder / "test_batch")
    meta = {
        b"num_cases_per_batch": n_train_per_batch,
        b"label_names": [name.encode() for name in LABEL_NAMES],
        b"num_vis": 3 * 32 * 32,
    }
    _dump(meta, folder / "batches.meta")
    return folder


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tests.data.cifar10 OUT_DIR")
    print(write_fake_cifar10(Path(sys.argv[1])))
