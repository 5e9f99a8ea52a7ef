"""CIFAR-10 from the official python batches on local disk, as a LightningDataModule.

Nothing is ever downloaded: the user extracts the official "CIFAR-10 python version" tarball
and passes its folder. The batches are pickles, and unpickling runs code named in the file, so
they are read with an unpickler that resolves only the few numpy globals a CIFAR batch needs.
"""

import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.transforms import v2
from typing_extensions import override

from robust_lightning._validation import check_bool
from robust_lightning.datamodules._common import (
    InMemoryImageDataModule,
    TensorImageDataset,
    check_non_negative_int,
    check_optional_positive_int,
    stratified_permutation,
)
from robust_lightning.datamodules._records import check_labels
from robust_lightning.errors import DataFileError, MissingFileError

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10DataModule",
    "ForbiddenGlobalError",
    "RestrictedUnpickler",
    "load_cifar_batch",
    "load_cifar_meta",
]

CIFAR10_CLASSES: tuple[str, ...] = (
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
_FOLDER_NAME = "cifar-10-batches-py"
_TRAIN_FILES: tuple[str, ...] = tuple(f"data_batch_{i}" for i in range(1, 6))
_TEST_FILE = "test_batch"
_META_FILE = "batches.meta"
_IMAGE_SHAPE = (3, 32, 32)
_PIXELS = 3 * 32 * 32
_DOWNLOAD_HINT = (
    "Get the 'CIFAR-10 python version' (cifar-10-python.tar.gz) from "
    "https://www.cs.toronto.edu/~kriz/cifar.html, extract it "
    "(tar -xzf cifar-10-python.tar.gz) and pass data_dir=<the extracted "
    f"{_FOLDER_NAME} folder, or the folder containing it>. "
    "robust_lightning never downloads datasets."
)


def _numpy_reconstruct() -> Any:
    # numpy 2 moved numpy.core to numpy._core; the old path still works but warns, and files
    # written by numpy 1 (the real CIFAR batches) name the old one.
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class ForbiddenGlobalError(DataFileError, pickle.UnpicklingError):
    """A pickle asked for a global (callable) outside the CIFAR-10 allowlist."""


def _latin1_encode(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    # Python 3 pickles bytes at protocol < 3 as _codecs.encode(text, "latin1"); allow exactly
    # that use rather than the whole codec registry (which includes compression codecs).
    if not isinstance(obj, str) or encoding.lower().replace("-", "_") not in ("latin1", "latin_1"):
        raise ForbiddenGlobalError(
            f"refusing _codecs.encode({type(obj).__name__}, {encoding!r}): only latin-1 "
            "encoding of str is allowed"
        )
    return obj.encode("latin-1", errors)


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals CIFAR python batches contain.

    A pickle can name any importable callable (``os.system``, ``builtins.exec``) and have it
    called while loading. CIFAR batches only need numpy's array reconstruction, so every other
    global is refused before anything is called.

    Args:
        file: Binary file object to read from.
        source: Name of the file, used in error messages.
    """

    def __init__(self, file: io.BufferedIOBase, source: str = "<pickle>") -> None:
        # encoding="bytes": the real batches are Python 2 pickles whose str keys and raw array
        # buffers must come back as bytes, not be decoded as text.
        super().__init__(file, encoding="bytes")
        self.source = source
        reconstruct = _numpy_reconstruct()
        self._allowed: dict[tuple[str, str], Any] = {
            ("numpy.core.multiarray", "_reconstruct"): reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): reconstruct,
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
            ("_codecs", "encode"): _latin1_encode,
        }

    @override
    def find_class(self, module: str, name: str) -> Any:
        """Returns an allowed global or raises.

        Raises:
            ForbiddenGlobalError: A ``pickle.UnpicklingError`` naming the forbidden global and
                the file.
        """
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise ForbiddenGlobalError(
                f"{self.source}: refusing to load forbidden global '{module}.{name}'. CIFAR-10 "
                "batches hold only numpy arrays, lists and bytes; this file is not a CIFAR-10 "
                "python batch, or it has been tampered with"
            ) from None


def _restricted_load(path: Path) -> Any:
    with path.open("rb") as file:
        try:
            return RestrictedUnpickler(file, source=str(path)).load()
        except ForbiddenGlobalError as error:
            if str(path) in str(error):
                raise
            raise ForbiddenGlobalError(f"{path}: {error}") from error
        except (
            pickle.UnpicklingError,
            EOFError,
            ValueError,
            TypeError,
            AttributeError,
            IndexError,
            KeyError,
        ) as error:
            # Truncated or garbled files fail inside pickle/numpy with assorted errors; they
            # are malformed content, not an attack, so they get the malformed-content error.
            raise DataFileError(f"{path}: not a readable CIFAR-10 python batch ({error!r})") from error


def _as_str_keys(content: Any, path: Path) -> dict[str, Any]:
    if not isinstance(content, dict):
        raise DataFileError(
            f"{path}: expected a dict as in CIFAR-10 python batches, got {type(content).__name__}"
        )
    # Python 2 pickles load with bytes keys under encoding="bytes"; accept str keys too, as
    # written by Python 3 tools.
    return {
        (key.decode("latin-1") if isinstance(key, bytes) else key): value
        for key, value in content.items()
    }


def load_cifar_batch(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Reads one CIFAR-10 python batch (``data_batch_*`` or ``test_batch``) safely.

    Args:
        path: Path to the batch file.

    Returns:
        ``(data, labels)``: ``data`` uint8 of shape ``(N, 3072)`` (red, green, blue planes of
        32x32, row-major), ``labels`` int64 of shape ``(N,)`` in ``0..9``.

    Raises:
        pickle.UnpicklingError: If the file names a global other than numpy's array pieces.
        ValueError: If the content does not have the CIFAR-10 layout.
    """
    path = Path(path)
    content = _as_str_keys(_restricted_load(path), path)
    missing = [key for key in ("data", "labels") if key not in content]
    if missing:
        raise DataFileError(
            f"{path}: missing key(s) {missing} of a CIFAR-10 python batch "
            f"(found {sorted(map(str, content))})"
        )
    data = content["data"]
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != _PIXELS
        or data.shape[0] == 0
    ):
        described = (
            f"{data.dtype} array of shape {data.shape}"
            if isinstance(data, np.ndarray)
            else type(data).__name__
        )
        raise DataFileError(
            f"{path}: 'data' must be a uint8 array of shape (N>0, 3072), got {described}"
        )
    raw_labels = content["labels"]
    if not isinstance(raw_labels, (list, tuple, np.ndarray)):
        raise DataFileError(
            f"{path}: 'labels' must be a list of ints, got {type(raw_labels).__name__}"
        )
    labels = np.asarray(raw_labels)
    if labels.shape != (data.shape[0],):
        raise DataFileError(
            f"{path}: 'labels' must hold one label per image ({data.shape[0]}), "
            f"got shape {labels.shape}"
        )
    if labels.dtype.kind not in "iu":
        raise DataFileError(f"{path}: 'labels' must be ints, got dtype {labels.dtype}")
    check_labels(labels, len(CIFAR10_CLASSES), source=path, field="labels")
    return data, labels.astype(np.int64)


def load_cifar_meta(path: str | os.PathLike[str]) -> list[str]:
    """Reads the class names from a CIFAR-10 ``batches.meta`` file safely.

    Args:
        path: Path to ``batches.meta``.

    Returns:
        The 10 class names.

    Raises:
        pickle.UnpicklingError: If the file names a forbidden global.
        ValueError: If the content has no list of 10 names under ``label_names``.
    """
    path = Path(path)
    content = _as_str_keys(_restricted_load(path), path)
    names = content.get("label_names")
    if (
        not isinstance(names, (list, tuple))
        or len(names) != len(CIFAR10_CLASSES)
        or not all(isinstance(name, (bytes, str)) for name in names)
    ):
        raise DataFileError(f"{path}: 'label_names' must be a list of 10 strings, got {names!r:.200}")
    return [name.decode("utf-8") if isinstance(name, bytes) else name for name in names]


def _to_image_tensor(data: np.ndarray) -> torch.Tensor:
    # Each row is the red, green then blue 32x32 plane, row-major: exactly (3, 32, 32) C-order.
    return torch.from_numpy(np.ascontiguousarray(data).reshape(-1, *_IMAGE_SHAPE))


class CIFAR10DataModule(InMemoryImageDataModule):
    """CIFAR-10 read from the official python batches in a local folder.

    Images are kept as one uint8 tensor ``(N, 3, 32, 32)`` and converted per item to float32
    in ``[0, 1]``; labels are int64. Batches are ``[images, labels]``. Normalisation belongs
    in the model (``nn.Normalize``) so attack budgets stay in pixel units.

    Only the files a stage needs are read: ``fit`` reads the training batches (and
    ``test_batch`` when ``val_size=0``), ``test``/``predict`` read ``test_batch`` only.

    Args:
        data_dir: Folder holding ``data_batch_1``..``data_batch_5`` and ``test_batch``
            (``cifar-10-batches-py``), or its parent.
        batch_size: Training batch size.
        eval_batch_size: Batch size for validation, test and predict; ``None`` uses
            ``batch_size``.
        num_workers: DataLoader worker processes.
        augment: Standard robustness-training augmentation of training images: random crop
            32 with 4 pixels of zero padding, then a random horizontal flip.
        val_size: 0 validates on the test batch (the usual practice of robustness
            benchmarks); ``k > 0`` holds out ``k`` training images (stratified, seeded by
            ``seed``) for validation and trains on the rest.
        seed: Seed of the validation hold-out and of the ``limit_train`` subset.
        limit_train: Train on at most this many images: a seeded, class-balanced subset of
            the (non-held-out) training images. ``None`` uses all.
        limit_test: Keep only the first ``limit_test`` test images (file order, as
            RobustBench/AutoAttack's ``n_ex`` does). With ``val_size=0`` this also limits
            validation. ``None`` uses all.

    Raises:
        ValueError: If an argument is out of range.

    Example:
        >>> dm = CIFAR10DataModule("data/cifar-10-batches-py", batch_size=256)
        >>> dm.setup("fit")  # doctest: +SKIP
    """

    def __init__(
        self,
        data_dir: str,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        augment: bool = True,
        val_size: int = 0,
        seed: int = 0,
        limit_train: int | None = None,
        limit_test: int | None = None,
    ) -> None:
        super().__init__(
            batch_size=batch_size, eval_batch_size=eval_batch_size, num_workers=num_workers
        )
        if not isinstance(data_dir, (str, os.PathLike)) or not str(data_dir):
            raise ValueError(f"data_dir must be a non-empty path, got {data_dir!r}")
        self.data_dir = Path(data_dir).expanduser()
        self.augment = check_bool("augment", augment)
        self.val_size = check_non_negative_int("val_size", val_size)
        self.seed = check_non_negative_int("seed", seed)
        self.limit_train = check_optional_positive_int("limit_train", limit_train)
        self.limit_test = check_optional_positive_int("limit_test", limit_test)
        self.split_indices: dict[str, torch.Tensor] = {}
        self._classes: list[str] | None = None
        self._train_arrays: tuple[torch.Tensor, torch.Tensor] | None = None
        self._test_arrays: tuple[torch.Tensor, torch.Tensor] | None = None
        self.save_hyperparameters()

    @property
    def num_classes(self) -> int:
        """Number of classes (10)."""
        return len(CIFAR10_CLASSES)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """Shape ``(C, H, W)`` of one image: ``(3, 32, 32)``."""
        return _IMAGE_SHAPE

    @property
    def classes(self) -> list[str]:
        """Class names from ``batches.meta`` if present, else the standard 10 names."""
        if self._classes is None:
            meta = next(
                (
                    folder / _META_FILE
                    for folder in self._candidate_dirs()
                    if (folder / _META_FILE).is_file()
                ),
                None,
            )
            self._classes = load_cifar_meta(meta) if meta is not None else list(CIFAR10_CLASSES)
        return list(self._classes)

    def _candidate_dirs(self) -> list[Path]:
        return [self.data_dir, self.data_dir / _FOLDER_NAME]

    def _resolve_dir(self, needed: list[str]) -> Path:
        """Returns the candidate folder holding every file in ``needed``.

        Raises:
            FileNotFoundError: Naming the folders searched, what each lacks and where to get
                the dataset.
        """
        reports = []
        for folder in self._candidate_dirs():
            if not folder.is_dir():
                reports.append(f"'{folder}' (no such directory)")
                continue
            missing = [name for name in needed if not (folder / name).is_file()]
            if not missing:
                return folder
            reports.append(f"'{folder}' (missing: {', '.join(missing)})")
        raise MissingFileError(
            f"CIFAR-10 python batches not found for data_dir='{self.data_dir}': looked in "
            f"{' and '.join(reports)}. {_DOWNLOAD_HINT}"
        )

    def _load(self, folder: Path, names: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        batches = [load_cifar_batch(folder / name) for name in names]
        # concatenate copies, so the tensor owns writable memory even for a single batch.
        data = np.concatenate([data for data, _ in batches])
        labels = np.concatenate([labels for _, labels in batches])
        return _to_image_tensor(data), torch.from_numpy(labels)

    def _train_transform(self) -> Any:
        if not self.augment:
            return None
        # uint8 in, uint8 out: padding and flipping are exact, the float conversion comes after.
        return v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip()])

    @override
    def setup(self, stage: str | None = None) -> None:
        """Reads the batches the stage needs (once) and builds its datasets.

        Args:
            stage: ``"fit"``, ``"validate"``, ``"test"``, ``"predict"`` or ``None`` for all.

        Raises:
            FileNotFoundError: If a needed batch file is missing.
            pickle.UnpicklingError: If a file names a forbidden global.
            ValueError: If a file is malformed or ``val_size`` leaves no training images.
        """
        want_train = stage in (None, "fit")
        want_val = stage in (None, "fit", "validate")
        want_test = stage in (None, "test", "predict")
        need_train_files = self._train_arrays is None and (
            (want_train and self.train_dataset is None)
            or (want_val and self.val_size > 0 and self.val_dataset is None)
        )
        need_test_file = (want_test or (want_val and self.val_size == 0)) and (
            self._test_arrays is None
        )
        needed = list(_TRAIN_FILES) if need_train_files else []
        if need_test_file:
            needed.append(_TEST_FILE)
        if needed:
            # Check every needed file before reading any, so one error lists them all.
            folder = self._resolve_dir(needed)
            if need_train_files:
                self._train_arrays = self._load(folder, _TRAIN_FILES)
            if need_test_file:
                images, labels = self._load(folder, (_TEST_FILE,))
                if self.limit_test is not None:
                    images, labels = images[: self.limit_test].clone(), labels[: self.limit_test]
                self._test_arrays = images, labels

        if (want_train or want_val) and self._train_arrays is not None and not self.split_indices:
            self._split_train()
        if want_train and self.train_dataset is None:
            images, labels = self._train_subset("train")
            self.train_dataset = TensorImageDataset(
                images, labels, transform=self._train_transform()
            )
        if want_val and self.val_dataset is None:
            if self.val_size > 0:
                self.val_dataset = TensorImageDataset(*self._train_subset("val"))
            else:
                assert self._test_arrays is not None
                self.val_dataset = TensorImageDataset(*self._test_arrays)
        if want_test and self.test_dataset is None:
            assert self._test_arrays is not None
            self.test_dataset = TensorImageDataset(*self._test_arrays)
        if self.train_dataset is not None and (self.val_size == 0 or self.val_dataset is not None):
            # Both subsets hold their own copies by now; drop the full 150 MB original.
            self._train_arrays = None

    def _split_train(self) -> None:
        assert self._train_arrays is not None
        _, labels = self._train_arrays
        total = labels.shape[0]
        if self.val_size >= total:
            raise ValueError(
                f"val_size={self.val_size} must be smaller than the number of training images "
                f"({total}) to leave some for training"
            )
        needs_order = self.val_size > 0 or (
            self.limit_train is not None and self.limit_train < total - self.val_size
        )
        if not needs_order:
            self.split_indices = {"train": torch.arange(total)}
            return
        order = torch.from_numpy(stratified_permutation(labels.numpy(), self.seed))
        val = order[: self.val_size]
        train = order[self.val_size :]
        if self.limit_train is not None:
            # The remainder of a stratified permutation is itself class-balanced in every
            # prefix, so its head is a balanced training subset.
            train = train[: self.limit_train]
        self.split_indices = {"train": train.sort().values}
        if self.val_size > 0:
            self.split_indices["val"] = val.sort().values

    def _train_subset(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        assert self._train_arrays is not None
        images, labels = self._train_arrays
        index = self.split_indices[split]
        if split == "train" and index.shape[0] == images.shape[0]:
            return images, labels  # all of it: skip a 150 MB copy
        return images[index], labels[index]
