"""DomainGeneralizationDataModule (source + named targets) and ImageFolderDataModule (real folders)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from robust_lightning.datamodules import (
    DigitsDataModule,
    DomainGeneralizationDataModule,
    ImageFolderDataModule,
    SyntheticDigitsDataModule,
)


def _write_folder(root: Path, classes: dict[str, int], size: tuple[int, int] = (20, 12), mode: str = "RGB",
                  ext: str = "png") -> Path:
    """An ImageFolder tree: ``root/<class>/<i>.<ext>`` with the class index as constant colour."""
    for label, (name, count) in enumerate(classes.items()):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(count):
            value = 20 * label + i
            color = (value, 255 - value, 7) if mode == "RGB" else value
            Image.new(mode, size, color).save(folder / f"{i}.{ext}")
    (root / "notes.txt").write_text("not a class folder")
    return root


def _source(**kwargs) -> SyntheticDigitsDataModule:
    return SyntheticDigitsDataModule(num_train=40, num_val=20, num_test=30, image_size=16, batch_size=8, **kwargs)


def test_domains_are_ordered_source_first_and_train_is_source_only() -> None:
    target = DigitsDataModule(image_size=16, batch_size=8, eval_batch_size=50)
    dm = DomainGeneralizationDataModule(_source(), {"real": target})
    assert dm.domain_names == ["synthetic", "real"]
    assert dm.num_classes == 10
    dm.setup("fit")
    train = dm.train_dataloader()
    assert train.dataset is dm.source.train_dataset
    val = dm.val_dataloader()
    assert [loader.dataset for loader in val] == [dm.source.val_dataset, target.val_dataset]
    test = dm.test_dataloader()
    assert len(test) == 2 and len(test[1].dataset) == len(target.test_dataset)
    assert next(iter(test[1]))[0].shape == (50, 1, 16, 16)


def test_without_source_evaluation_only_targets_are_evaluated() -> None:
    dm = DomainGeneralizationDataModule(_source(), {"a": DigitsDataModule(seed=1), "b": DigitsDataModule(seed=2)},
                                        evaluate_source=False)
    assert dm.domain_names == ["a", "b"]
    dm.setup("validate")
    assert len(dm.val_dataloader()) == 2


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="source"):
        DomainGeneralizationDataModule("digits", {})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="targets"):
        DomainGeneralizationDataModule(_source(), [DigitsDataModule()])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="targets"):
        DomainGeneralizationDataModule(_source(), {"real": object()})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="targets"):
        DomainGeneralizationDataModule(_source(), {"real digits": DigitsDataModule()})
    with pytest.raises(ValueError, match="source_name"):
        DomainGeneralizationDataModule(_source(), {"real": DigitsDataModule()}, source_name="")
    with pytest.raises(ValueError, match="source_name"):
        DomainGeneralizationDataModule(_source(), {"synthetic": DigitsDataModule()})
    with pytest.raises(TypeError, match="evaluate_source"):
        DomainGeneralizationDataModule(_source(), {"real": DigitsDataModule()}, evaluate_source="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="nothing to evaluate"):
        DomainGeneralizationDataModule(_source(), {}, evaluate_source=False)


def test_targets_must_share_the_label_space(tmp_path: Path) -> None:
    root = _write_folder(tmp_path / "three", {"a": 1, "b": 1, "c": 1})
    dm = DomainGeneralizationDataModule(_source(), {"folder": ImageFolderDataModule(str(root), image_size=16)})
    with pytest.raises(ValueError, match="classes"):
        dm.setup("fit")


def test_image_folder_reads_labels_resizes_and_crops(tmp_path: Path) -> None:
    root = _write_folder(tmp_path / "rgb", {"cat": 3, "dog": 2})
    dm = ImageFolderDataModule(str(root), image_size=8, channels=3, batch_size=10)
    dm.setup("test")
    assert dm.classes == ["cat", "dog"] and dm.num_classes == 2 and dm.image_shape == (3, 8, 8)
    images, labels = next(iter(dm.test_dataloader()))
    assert images.shape == (5, 3, 8, 8) and images.dtype == torch.float32
    assert labels.tolist() == [0, 0, 0, 1, 1]
    # Constant-colour images survive resizing: pixel values are the colour / 255.
    first_dog = torch.tensor([20.0, 235.0, 7.0]) / 255.0
    assert torch.allclose(images[3], first_dog[:, None, None].expand(3, 8, 8), atol=1e-6)
    assert 0.0 <= images.min() and images.max() <= 1.0


def test_image_folder_grey_explicit_class_order_and_jpeg(tmp_path: Path) -> None:
    root = _write_folder(tmp_path / "grey", {"0": 2, "1": 2, "2": 1}, size=(16, 16), mode="L", ext="jpg")
    dm = ImageFolderDataModule(str(root), classes=["2", "0"], image_size=16, channels=1, batch_size=8)
    dm.setup("fit")
    images, labels = next(iter(dm.val_dataloader()))
    assert images.shape == (3, 1, 16, 16)
    assert labels.tolist() == [0, 1, 1]
    # Folder "2" holds the value 40 and becomes label 0 (the order given, not the sorted one).
    assert images[0].mean().item() == pytest.approx(40 / 255, abs=2 / 255)


def test_image_folder_as_a_real_target_for_synthetic_digits(tmp_path: Path) -> None:
    root = tmp_path / "real_digits"
    digits = DigitsDataModule(image_size=16)
    digits.setup("test")
    for i in range(20):
        image, label = digits.test_dataset[i]
        folder = root / str(int(label))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image[0].numpy() * 255).round().astype(np.uint8)).save(folder / f"{i}.png")
    for digit in range(10):
        (root / str(digit)).mkdir(parents=True, exist_ok=True)
        if not any((root / str(digit)).iterdir()):
            Image.new("L", (16, 16), 0).save(root / str(digit) / "blank.png")
    target = ImageFolderDataModule(str(root), classes=[str(d) for d in range(10)], image_size=16, channels=1)
    dm = DomainGeneralizationDataModule(_source(), {"folder": target})
    dm.setup("test")
    images, labels = next(iter(dm.test_dataloader()[1]))
    assert images.shape[1:] == (1, 16, 16) and set(labels.tolist()) <= set(range(10))


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="root"):
        ImageFolderDataModule(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no class"):
        ImageFolderDataModule(str(tmp_path / "empty"))
    root = _write_folder(tmp_path / "ok", {"a": 1})
    with pytest.raises(ValueError, match="channels"):
        ImageFolderDataModule(str(root), channels=4)
    with pytest.raises(ValueError, match="classes"):
        ImageFolderDataModule(str(root), classes="a")
    with pytest.raises(ValueError, match="classes"):
        ImageFolderDataModule(str(root), classes=["a", "a"])
    with pytest.raises(ValueError, match="image_size"):
        ImageFolderDataModule(str(root), image_size=2)
    missing = ImageFolderDataModule(str(root), classes=["a", "b"])
    with pytest.raises(ValueError, match="'b'"):
        missing.setup("test")
    (root / "c").mkdir()
    no_images = ImageFolderDataModule(str(root), classes=["a", "c"])
    with pytest.raises(ValueError, match="holds no images"):
        no_images.setup("test")
