"""Tests of DigitsDataModule on scikit-learn's real digits (no download, ~0.1 s to load)."""

import numpy as np
import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from sklearn.datasets import load_digits

from robust_lightning.datamodules import DigitsDataModule

N_DIGITS = 1797


def _ready(**kwargs: object) -> DigitsDataModule:
    dm = DigitsDataModule(**kwargs)
    dm.setup("fit")
    return dm


@pytest.fixture(scope="module")
def dm() -> DigitsDataModule:
    return _ready()


def test_batches_shapes_dtypes_and_range(dm: DigitsDataModule) -> None:
    assert dm.num_classes == 10
    assert dm.image_shape == (1, 16, 16)
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        batch = next(iter(loader))
        assert isinstance(batch, list) and len(batch) == 2
        images, labels = batch
        assert images.shape == (128, 1, 16, 16)
        assert images.dtype == torch.float32
        assert labels.shape == (128,) and labels.dtype == torch.int64
        assert images.min() >= 0.0 and images.max() <= 1.0
        assert set(labels.tolist()) <= set(range(10))


@pytest.mark.parametrize("image_size", [8, 12, 32])
def test_image_size(image_size: int) -> None:
    dm = _ready(image_size=image_size)
    image, _ = dm.train_dataset[0]
    assert image.shape == (1, image_size, image_size)
    assert dm.image_shape == (1, image_size, image_size)


def test_values_match_sklearn_and_interpolation() -> None:
    digits = load_digits()
    dm8 = _ready(image_size=8)
    position = 3
    index = int(dm8.split_indices["train"][position])
    image8, label8 = dm8.train_dataset[position]
    expected = torch.from_numpy(digits.images[index].astype(np.float32) / 16.0)
    torch.testing.assert_close(image8[0], expected)
    assert int(label8) == digits.target[index]

    dm16 = _ready(image_size=16)
    image16, _ = dm16.train_dataset[position]
    resized = torch.nn.functional.interpolate(
        expected[None, None], size=(16, 16), mode="bilinear", align_corners=False, antialias=False
    ).clamp(0, 1)
    torch.testing.assert_close(image16, resized[0])


def test_split_sizes_disjoint_and_stratified(dm: DigitsDataModule) -> None:
    splits = dm.split_indices
    sizes = {name: len(index) for name, index in splits.items()}
    assert sizes["test"] == round(0.2 * N_DIGITS)
    assert sizes["val"] == round(0.2 * N_DIGITS)
    assert sum(sizes.values()) == N_DIGITS
    assert len(dm.train_dataset) == sizes["train"]
    assert len(dm.val_dataset) == sizes["val"]
    assert len(dm.test_dataset) == sizes["test"]
    train, val, test = (set(splits[name].tolist()) for name in ("train", "val", "test"))
    assert not train & val and not train & test and not val & test
    assert train | val | test == set(range(N_DIGITS))

    targets = load_digits().target
    overall = np.bincount(targets, minlength=10) / N_DIGITS
    for name, index in splits.items():
        counts = np.bincount(targets[index.numpy()], minlength=10)
        # Stratified: each class gets its proportional share up to rounding.
        assert np.all(np.abs(counts - overall * len(index)) <= 1.5), (name, counts)


def test_split_deterministic_for_seed_and_different_across_seeds(dm: DigitsDataModule) -> None:
    again = _ready()
    for name in ("train", "val", "test"):
        assert torch.equal(dm.split_indices[name], again.split_indices[name])
    torch.testing.assert_close(dm.val_dataset.images, again.val_dataset.images)
    other = _ready(seed=1)
    assert not torch.equal(dm.split_indices["test"], other.split_indices["test"])


def test_split_does_not_touch_global_rng() -> None:
    torch.manual_seed(123)
    np.random.seed(123)
    expected_torch = torch.rand(3)
    expected_numpy = np.random.rand(3)
    torch.manual_seed(123)
    np.random.seed(123)
    _ready(seed=7)
    torch.testing.assert_close(torch.rand(3), expected_torch)
    np.testing.assert_array_equal(np.random.rand(3), expected_numpy)


def test_val_fraction_does_not_change_test_set(dm: DigitsDataModule) -> None:
    other = _ready(val_fraction=0.1)
    assert torch.equal(dm.split_indices["test"], other.split_indices["test"])


def test_zero_fractions() -> None:
    dm = _ready(val_fraction=0.0, test_fraction=0.0)
    assert len(dm.train_dataset) == N_DIGITS
    assert len(dm.val_dataset) == 0 and len(dm.test_dataset) == 0


def test_augment_changes_train_not_val() -> None:
    plain = _ready()
    augmented = _ready(augment=True)
    torch.manual_seed(0)
    train_changed = sum(
        not torch.equal(augmented.train_dataset[i][0], plain.train_dataset[i][0]) for i in range(20)
    )
    assert train_changed >= 10  # a draw of zero shift in both axes leaves an image unchanged
    for i in range(20):
        image, _ = augmented.train_dataset[i]
        assert image.shape == (1, 16, 16) and image.min() >= 0 and image.max() <= 1
        torch.testing.assert_close(augmented.val_dataset[i][0], plain.val_dataset[i][0])
        torch.testing.assert_close(augmented.test_dataset[i][0], plain.test_dataset[i][0])


def test_augment_is_a_translation_by_at_most_pad() -> None:
    plain = _ready(image_size=16)
    augmented = _ready(image_size=16, augment=True)
    pad = 2  # max(1, 16 // 8)
    original = torch.nn.functional.pad(plain.train_dataset[0][0], (pad,) * 4)
    torch.manual_seed(1)
    for _ in range(10):
        shifted = augmented.train_dataset[0][0]
        matches = [
            torch.equal(shifted, original[:, dy : dy + 16, dx : dx + 16])
            for dy in range(2 * pad + 1)
            for dx in range(2 * pad + 1)
        ]
        assert any(matches)


def test_three_channels_repeat_grey() -> None:
    dm = _ready(channels=3)
    assert dm.image_shape == (3, 16, 16)
    images, _ = next(iter(dm.val_dataloader()))
    assert images.shape[1] == 3
    torch.testing.assert_close(images[:, 0], images[:, 1])
    torch.testing.assert_close(images[:, 0], images[:, 2])


def test_eval_batch_size_and_predict() -> None:
    dm = _ready(batch_size=32, eval_batch_size=100)
    assert next(iter(dm.train_dataloader()))[0].shape[0] == 32
    assert next(iter(dm.val_dataloader()))[0].shape[0] == 100
    predict = dm.predict_dataloader()
    assert predict.dataset is dm.test_dataset
    assert DigitsDataModule(batch_size=7).eval_batch_size == 7


def test_hparams_saved() -> None:
    dm = DigitsDataModule(image_size=12, seed=3)
    assert dm.hparams["image_size"] == 12 and dm.hparams["seed"] == 3


def test_dataloader_before_setup_raises() -> None:
    with pytest.raises(RuntimeError, match="setup"):
        DigitsDataModule().train_dataloader()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "batch_size must be a positive int, got 0"),
        ({"batch_size": 2.5}, "batch_size must be a positive int"),
        ({"batch_size": True}, "batch_size must be a positive int"),
        ({"eval_batch_size": -1}, "eval_batch_size must be a positive int"),
        ({"num_workers": -1}, "num_workers must be a non-negative int"),
        ({"image_size": 7}, r"image_size must be an int >= 8"),
        ({"val_fraction": 1.0}, r"val_fraction must be a float in \[0, 1\)"),
        ({"test_fraction": -0.1}, r"test_fraction must be a float in \[0, 1\)"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "val_fraction \\+ test_fraction must be < 1"),
        ({"channels": 2}, r"channels must be one of \(1, 3\), got 2"),
        ({"channels": True}, r"channels must be one of \(1, 3\), got True"),
        ({"seed": -1}, "seed must be a non-negative int"),
        ({"augment": "yes"}, "augment must be a bool"),
    ],
)
def test_argument_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DigitsDataModule(**kwargs)


class _TinyClassifier(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        return torch.nn.functional.cross_entropy(self.net(images), labels)

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        images, labels = batch
        self.log("val/loss", torch.nn.functional.cross_entropy(self.net(images), labels))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_trainer_fast_dev_run(tmp_path) -> None:
    trainer = Trainer(
        fast_dev_run=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(_TinyClassifier(), datamodule=DigitsDataModule(image_size=8, batch_size=16))
