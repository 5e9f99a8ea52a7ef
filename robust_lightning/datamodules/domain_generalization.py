"""Single-source domain generalisation: train on one domain, evaluate on several named ones.

:class:`DomainGeneralizationDataModule` wraps a source DataModule (trained on, nothing else) and
named target DataModules (never trained on). Validation and test return one dataloader per
domain in a fixed order, so Lightning passes ``dataloader_idx`` and a module can log
``val/acc/<domain>``; :attr:`DomainGeneralizationDataModule.domain_names` maps the index to the
name. :class:`ImageFolderDataModule` turns a folder of real images (``root/<class>/*.png``, e.g.
CIFAR-style exports) into such a target.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import Dataset
from typing_extensions import override

from robust_lightning._validation import check_bool, check_choice, check_instance
from robust_lightning.datamodules._common import (
    InMemoryImageDataModule,
    check_int_at_least,
)
from robust_lightning.errors import DataFileError, InvalidArgumentError

__all__ = ["DomainGeneralizationDataModule", "ImageFolderDataModule"]

_DOMAIN_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def _check_domain_name(argument: str, name: Any) -> str:
    # Names become metric keys (val/acc/<name>) and CSV columns: keep them path- and CSV-safe.
    if not isinstance(name, str) or not _DOMAIN_NAME.match(name):
        raise ValueError(
            f"{argument} must be a non-empty name of letters, digits, '_', '-' or '.', got {name!r}"
        )
    return name


class DomainGeneralizationDataModule(LightningDataModule):
    """Trains on ``source`` only; validates/tests on the source and every named target.

    Evaluation dataloaders come in the order of :attr:`domain_names`: the source first (when
    ``evaluate_source``), then the targets in the order given. Each is the wrapped module's own
    ``val_dataloader``/``test_dataloader``, so targets keep their own splits and batch sizes.
    Model selection should use the source domain's metric: in single-domain generalisation the
    target is unseen, and picking checkpoints by target accuracy would leak it.

    Args:
        source: DataModule of the training domain (its ``train_dataloader`` is the only one
            used for training).
        targets: Named target DataModules, e.g. ``{"real": DigitsDataModule(...)}``.
        source_name: Name of the source domain in metric keys.
        evaluate_source: Also validate/test on the source's own held-out split (in-domain
            accuracy, the usual model-selection signal).

    Raises:
        TypeError: If ``source`` or a target is not a LightningDataModule, or
            ``evaluate_source`` is not a bool.
        ValueError: If names are empty, unsafe for metric keys, or repeated.

    Example:
        >>> dm = DomainGeneralizationDataModule(
        ...     source=SyntheticDigitsDataModule(image_size=16),
        ...     targets={"real": DigitsDataModule(image_size=16)})
        >>> dm.domain_names
        ['synthetic', 'real']
    """

    def __init__(
        self,
        source: LightningDataModule,
        targets: Mapping[str, LightningDataModule],
        source_name: str = "synthetic",
        evaluate_source: bool = True,
    ) -> None:
        super().__init__()
        self.source = check_instance("source", source, LightningDataModule, "a LightningDataModule")
        if not isinstance(targets, Mapping):
            raise TypeError(f"targets must be a dict of name -> LightningDataModule, got {type(targets).__name__}")
        check_bool("evaluate_source", evaluate_source)
        self.source_name = _check_domain_name("source_name", source_name)
        self.targets: dict[str, LightningDataModule] = {}
        for name, module in targets.items():
            _check_domain_name("targets", name)
            self.targets[name] = check_instance(f"targets[{name!r}]", module, LightningDataModule,
                                                "a LightningDataModule")
        if evaluate_source and self.source_name in self.targets:
            raise ValueError(f"targets must not reuse source_name {self.source_name!r}")
        if not self.targets and not evaluate_source:
            raise ValueError("nothing to evaluate: give targets or set evaluate_source=True")
        self.evaluate_source = evaluate_source

    @property
    def domain_names(self) -> list[str]:
        """Names of the evaluation domains, in ``dataloader_idx`` order."""
        return ([self.source_name] if self.evaluate_source else []) + list(self.targets)

    @property
    def num_classes(self) -> int | None:
        """The source's ``num_classes`` when it has one."""
        return getattr(self.source, "num_classes", None)

    def _modules(self) -> list[LightningDataModule]:
        return [self.source, *self.targets.values()]

    def _eval_modules(self) -> list[LightningDataModule]:
        return ([self.source] if self.evaluate_source else []) + list(self.targets.values())

    @override
    def prepare_data(self) -> None:
        """Runs every wrapped module's ``prepare_data`` (downloads, if any, happen there)."""
        for module in self._modules():
            module.prepare_data()

    @override
    def setup(self, stage: str | None = None) -> None:
        """Sets up every wrapped module and checks that targets share the source's classes."""
        for module in self._modules():
            module.trainer = self.trainer
            module.setup(stage)
        source_classes = getattr(self.source, "num_classes", None)
        for name, module in self.targets.items():
            target_classes = getattr(module, "num_classes", None)
            if source_classes is not None and target_classes is not None and target_classes != source_classes:
                raise ValueError(
                    f"target {name!r} has {target_classes} classes but the source has {source_classes}; "
                    "domain generalisation needs one label space"
                )

    @override
    def teardown(self, stage: str | None = None) -> None:
        for module in self._modules():
            module.teardown(stage)

    @override
    def train_dataloader(self) -> Any:
        """The source's training batches (targets are never trained on)."""
        return self.source.train_dataloader()

    @override
    def val_dataloader(self) -> list[Any]:
        """One validation dataloader per domain, in :attr:`domain_names` order."""
        return [module.val_dataloader() for module in self._eval_modules()]

    @override
    def test_dataloader(self) -> list[Any]:
        """One test dataloader per domain, in :attr:`domain_names` order."""
        return [module.test_dataloader() for module in self._eval_modules()]

    @override
    def predict_dataloader(self) -> list[Any]:
        """The test dataloaders, for ``Trainer.predict``."""
        return self.test_dataloader()


class _FolderImages(Dataset[tuple[Tensor, Tensor]]):
    """Lazily decoded images of an ImageFolder-style tree (kept compact: paths, not pixels)."""

    def __init__(self, samples: list[tuple[str, int]], image_size: int, channels: int) -> None:
        self.samples = samples
        self.image_size = image_size
        self.channels = channels

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        from PIL import Image
        from torchvision.transforms.v2 import functional as TF

        path, label = self.samples[index]
        try:
            with Image.open(path) as image:
                image = image.convert("L" if self.channels == 1 else "RGB")
                tensor = TF.pil_to_tensor(image)
        except (OSError, SyntaxError, ValueError) as error:
            raise DataFileError(f"{path}: not a readable image ({error})") from None
        # Resize the short side, then centre-crop: the aspect ratio of real photos is kept.
        tensor = TF.resize(tensor, [self.image_size], antialias=True)
        tensor = TF.center_crop(tensor, [self.image_size, self.image_size])
        return tensor.to(torch.float32).div_(255.0), torch.tensor(label, dtype=torch.int64)


def _verify_images(paths: list[str]) -> None:
    """Every file decodes as an image (PIL's header and checksum check), named when not."""
    from PIL import Image

    for path in paths:
        try:
            with Image.open(path) as image:
                image.verify()
        except (OSError, SyntaxError, ValueError) as error:
            raise DataFileError(f"{path}: not a readable image (corrupt or truncated: {error})") from None


class ImageFolderDataModule(InMemoryImageDataModule):
    """Real images in ``root/<class_name>/<image>`` folders, as an evaluation target.

    The same folders serve validation and test (a target domain is not trained on, so it needs
    no training split); ``train_dataloader`` serves them too, for completeness. Images are
    decoded on access, converted to grey (``channels=1``) or RGB, resized on the short side and
    centre-cropped to ``image_size``.

    Args:
        root: Folder with one sub-folder per class.
        classes: Class names in label order (must match the source's labels, e.g. ``["0", ...,
            "9"]`` or CIFAR-10's names); ``None`` takes the sorted sub-folder names. A listed class
            without a folder is an error; folders not listed are ignored.
        image_size: Output side.
        channels: 1 or 3.
        batch_size: Batch size.
        eval_batch_size: Evaluation batch size (``None``: ``batch_size``).
        num_workers: DataLoader workers (decoding happens in them).

    Raises:
        ValueError: If the folder or a class is missing, or holds no images.
    """

    def __init__(
        self,
        root: str,
        classes: Sequence[str] | None = None,
        image_size: int = 32,
        channels: int = 3,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, eval_batch_size=eval_batch_size, num_workers=num_workers)
        if not isinstance(root, (str, os.PathLike)) or not os.path.isdir(root):
            raise ValueError(f"root must be an existing folder of class sub-folders, got {root!r}")
        self.root = os.fspath(root)
        self.image_size = check_int_at_least("image_size", image_size, 8)
        self.channels = int(check_choice("channels", channels, (1, 3)))
        if classes is None:
            classes = sorted(entry.name for entry in os.scandir(self.root) if entry.is_dir())
        elif isinstance(classes, str) or not all(isinstance(c, str) for c in classes):
            raise ValueError(f"classes must be a list of folder names, got {classes!r}")
        self.class_names = list(classes)
        if not self.class_names:
            raise ValueError(f"root {self.root!r} has no class sub-folders")
        if len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"classes must be unique, got {self.class_names}")
        self.save_hyperparameters()

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    @property
    def classes(self) -> list[str]:
        """Class names in label order."""
        return list(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """Shape ``(C, H, W)`` of one image."""
        return (self.channels, self.image_size, self.image_size)

    def _samples(self) -> list[tuple[str, int]]:
        samples: list[tuple[str, int]] = []
        for label, name in enumerate(self.class_names):
            folder = os.path.join(self.root, name)
            if not os.path.isdir(folder):
                raise InvalidArgumentError(f"classes: no folder {folder!r} for class {name!r}")
            files = sorted(
                os.path.join(folder, f) for f in os.listdir(folder) if f.lower().endswith(_IMAGE_EXTENSIONS)
            )
            if not files:
                raise DataFileError(f"class folder {folder!r} holds no images ({', '.join(_IMAGE_EXTENSIONS)})")
            samples += [(path, label) for path in files]
        return samples

    @override
    def setup(self, stage: str | None = None) -> None:
        """Lists the images once; every split is the whole folder."""
        if self.train_dataset is not None:
            return
        samples = self._samples()
        _verify_images([path for path, _ in samples])
        dataset = _FolderImages(samples, self.image_size, self.channels)
        # The plumbing in InMemoryImageDataModule only needs a Dataset.
        self.train_dataset = self.val_dataset = self.test_dataset = dataset  # type: ignore[assignment]

