"""Tests of CIFAR10DataModule on fake batches written in the official format."""

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from robust_lightning.datamodules import CIFAR10DataModule
from robust_lightning.datamodules.cifar10 import (
    CIFAR10_CLASSES,
    RestrictedUnpickler,
    load_cifar_batch,
    load_cifar_meta,
)
from tests.data.cifar10 import LABEL_NAMES, TRAIN_FILES, write_fake_cifar10

N_PER_BATCH = 20
N_TRAIN = 5 * N_PER_BATCH
N_TEST = 20


@pytest.fixture()
def cifar_dir(tmp_path: Path) -> Path:
    return write_fake_cifar10(tmp_path, n_train_per_batch=N_PER_BATCH, n_test=N_TEST)


def _raw(path: Path) -> dict:
    with path.open("rb") as file:
        return pickle.load(file, encoding="bytes")


def _dump(obj: object, path: Path) -> None:
    with path.open("wb") as file:
        pickle.dump(obj, file, protocol=2)


def _ready(cifar_dir: Path, stage: str | None = None, **kwargs: object) -> CIFAR10DataModule:
    kwargs.setdefault("augment", False)
    dm = CIFAR10DataModule(str(cifar_dir), **kwargs)
    dm.setup(stage)
    return dm


def test_fake_files_have_the_official_layout(cifar_dir: Path) -> None:
    batch = _raw(cifar_dir / "data_batch_1")
    assert set(batch) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert batch[b"data"].dtype == np.uint8 and batch[b"data"].shape == (N_PER_BATCH, 3072)
    assert all(isinstance(label, int) for label in batch[b"labels"])
    assert _raw(cifar_dir / "batches.meta")[b"label_names"][0] == b"airplane"
    with (cifar_dir / "test_batch").open("rb") as file:
        assert file.read(2) == b"\x80\x02"  # pickle protocol 2


def test_batches_shapes_dtypes_and_range(cifar_dir: Path) -> None:
    dm = _ready(cifar_dir, batch_size=8, augment=True)
    assert dm.num_classes == 10 and dm.image_shape == (3, 32, 32)
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        images, labels = next(iter(loader))
        assert images.shape == (8, 3, 32, 32) and images.dtype == torch.float32
        assert labels.shape == (8,) and labels.dtype == torch.int64
        assert images.min() >= 0.0 and images.max() <= 1.0
    assert dm.train_dataset.images.dtype == torch.uint8
    assert dm.train_dataset.images.shape == (N_TRAIN, 3, 32, 32)


def test_roundtrip_pixels_and_labels(cifar_dir: Path) -> None:
    dm = _ready(cifar_dir)
    train_data = np.concatenate([_raw(cifar_dir / name)[b"data"] for name in TRAIN_FILES])
    train_labels = sum((_raw(cifar_dir / name)[b"labels"] for name in TRAIN_FILES), [])
    test = _raw(cifar_dir / "test_batch")
    assert dm.train_dataset.labels.tolist() == train_labels
    assert dm.test_dataset.labels.tolist() == test[b"labels"]
    # Row layout: red plane, green plane, blue plane, each 32x32 row-major.
    for index, channel, y, x in [(0, 0, 0, 0), (3, 1, 5, 7), (57, 2, 31, 31), (99, 0, 31, 0)]:
        image, label = dm.train_dataset[index]
        expected = int(train_data[index, channel * 1024 + y * 32 + x])
        assert round(float(image[channel, y, x]) * 255) == expected
        assert int(label) == train_labels[index]
    image, _ = dm.test_dataset[11]
    expected = torch.from_numpy(test[b"data"][11].reshape(3, 32, 32).astype(np.float32) / 255)
    torch.testing.assert_close(image, expected)


def test_val_defaults_to_test_batch(cifar_dir: Path) -> None:
    dm = _ready(cifar_dir, stage="fit")
    assert len(dm.train_dataset) == N_TRAIN
    assert len(dm.val_dataset) == N_TEST
    assert torch.equal(dm.val_dataset.images, _ready(cifar_dir, "test").test_dataset.images)


@pytest.mark.parametrize("form", ["folder", "parent"])
def test_both_data_dir_forms(cifar_dir: Path, form: str) -> None:
    data_dir = cifar_dir if form == "folder" else cifar_dir.parent
    dm = _ready(data_dir)
    assert len(dm.train_dataset) == N_TRAIN and len(dm.test_dataset) == N_TEST


def test_missing_everything_message(tmp_path: Path) -> None:
    dm = CIFAR10DataModule(str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        dm.setup("fit")
    message = str(info.value)
    assert str(tmp_path) in message
    assert "data_batch_1" in message and "data_batch_5" in message and "test_batch" in message
    assert "cifar-10-python.tar.gz" in message and "CIFAR-10 python version" in message
    assert "https://www.cs.toronto.edu/~kriz/cifar.html" in message
    assert "never downloads" in message


def test_missing_one_file_names_only_it(cifar_dir: Path) -> None:
    (cifar_dir / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError) as info:
        _ready(cifar_dir.parent, stage="fit")
    message = str(info.value)
    assert f"'{cifar_dir}' (missing: data_batch_3)" in message
    assert "data_batch_1" not in message.split("(missing")[-1]


def test_test_stage_needs_only_test_batch(cifar_dir: Path) -> None:
    for name in TRAIN_FILES:
        (cifar_dir / name).unlink()
    dm = _ready(cifar_dir, stage="test")
    assert len(dm.test_dataset) == N_TEST and dm.train_dataset is None
    assert next(iter(dm.predict_dataloader()))[0].shape[1:] == (3, 32, 32)
    with pytest.raises(FileNotFoundError, match="data_batch_1"):
        dm.setup("fit")


def test_classes_from_meta_default_and_custom(cifar_dir: Path) -> None:
    assert CIFAR10DataModule(str(cifar_dir)).classes == list(LABEL_NAMES)
    custom = [f"class{i}" for i in range(10)]
    _dump({b"label_names": [name.encode() for name in custom]}, cifar_dir / "batches.meta")
    assert CIFAR10DataModule(str(cifar_dir.parent)).classes == custom
    (cifar_dir / "batches.meta").unlink()
    assert CIFAR10DataModule(str(cifar_dir)).classes == list(CIFAR10_CLASSES)


def _write_os_system_pickle(path: Path, marker: Path) -> None:
    # Protocol 0 by hand: GLOBAL 'os system', then call it with one string argument.
    path.write_bytes(b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")


class _ExecPayload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


# Protocol 2 writes builtins under their Python 2 module name.
@pytest.mark.parametrize(
    ("payload", "named"), [("os.system", "'os.system'"), ("exec", "'__builtin__.exec'")]
)
def test_malicious_pickle_is_refused_and_not_run(
    cifar_dir: Path, tmp_path: Path, payload: str, named: str
) -> None:
    marker = tmp_path / "pwned"
    target = cifar_dir / "test_batch"
    if payload == "os.system":
        _write_os_system_pickle(target, marker)
    else:
        _dump({b"data": _ExecPayload(marker), b"labels": []}, target)
    with pytest.raises(pickle.UnpicklingError) as info:
        _ready(cifar_dir, stage="test")
    assert f"forbidden global {named}" in str(info.value)
    assert str(target) in str(info.value)
    assert not marker.exists()


def test_malicious_meta_is_refused(cifar_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    _write_os_system_pickle(cifar_dir / "batches.meta", marker)
    with pytest.raises(pickle.UnpicklingError, match="os.system"):
        _ = CIFAR10DataModule(str(cifar_dir)).classes
    assert not marker.exists()


def test_codecs_encode_only_latin1(tmp_path: Path) -> None:
    path = tmp_path / "batch"
    path.write_bytes(b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x04\x00\x00\x00zlib\x86R.")
    with pytest.raises(pickle.UnpicklingError, match="latin-1"):
        load_cifar_batch(path)


def test_numpy1_global_names_load(cifar_dir: Path) -> None:
    # The official files were written by numpy 1, which names numpy.core, not numpy._core.
    target = cifar_dir / "test_batch"
    raw = target.read_bytes()
    assert b"numpy._core.multiarray" in raw
    target.write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    data, labels = load_cifar_batch(target)
    np.testing.assert_array_equal(data, _raw(target)[b"data"])
    assert labels.tolist() == _raw(target)[b"labels"]


def test_restricted_unpickler_allows_str_keys(tmp_path: Path) -> None:
    path = tmp_path / "batch"
    data = np.arange(2 * 3072, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
    with path.open("wb") as file:
        pickle.dump({"data": data, "labels": [3, 4]}, file, protocol=4)
    loaded, labels = load_cifar_batch(path)
    np.testing.assert_array_equal(loaded, data)
    assert labels.dtype == np.int64 and labels.tolist() == [3, 4]
    with path.open("rb") as file:
        assert isinstance(RestrictedUnpickler(file).load(), dict)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({b"data": np.zeros((4, 100), np.uint8), b"labels": [0] * 4}, r"shape \(N>0, 3072\)"),
        ({b"data": np.zeros((4, 3072), np.float32), b"labels": [0] * 4}, "uint8"),
        (
            {b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 10]},
            r"labels must be in 0\.\.9",
        ),
        ({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1]}, "one label per image"),
        ({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0.5] * 4}, "must be ints"),
        ({b"data": np.zeros((4, 3072), np.uint8)}, "missing key"),
        ([1, 2, 3], "expected a dict"),
    ],
)
def test_malformed_batch_raises_value_error_naming_file(
    cifar_dir: Path, content: object, message: str
) -> None:
    target = cifar_dir / "test_batch"
    _dump(content, target)
    with pytest.raises(ValueError, match=message) as info:
        _ready(cifar_dir, stage="test")
    assert str(target) in str(info.value)


def test_truncated_file_raises_value_error(cifar_dir: Path) -> None:
    target = cifar_dir / "data_batch_2"
    target.write_bytes(target.read_bytes()[:100])
    with pytest.raises(ValueError, match="data_batch_2"):
        _ready(cifar_dir, stage="fit")


def test_malformed_meta(cifar_dir: Path) -> None:
    _dump({b"label_names": [b"a", b"b"]}, cifar_dir / "batches.meta")
    with pytest.raises(ValueError, match="batches.meta"):
        load_cifar_meta(cifar_dir / "batches.meta")


def test_val_size_split(cifar_dir: Path) -> None:
    dm = _ready(cifar_dir, val_size=30)
    assert len(dm.val_dataset) == 30 and len(dm.train_dataset) == N_TRAIN - 30
    assert len(dm.test_dataset) == N_TEST
    train, val = (set(dm.split_indices[name].tolist()) for name in ("train", "val"))
    assert not train & val and train | val == set(range(N_TRAIN))
    # Stratified: 30 of 100 balanced images -> 3 per class.
    assert torch.bincount(dm.val_dataset.labels, minlength=10).tolist() == [3] * 10

    same = _ready(cifar_dir, val_size=30)
    assert torch.equal(same.split_indices["val"], dm.split_indices["val"])
    torch.testing.assert_close(same.val_dataset.images, dm.val_dataset.images)
    other = _ready(cifar_dir, val_size=30, seed=1)
    assert not torch.equal(other.split_indices["val"], dm.split_indices["val"])

    everything = _ready(cifar_dir)
    index = dm.split_indices["val"]
    assert torch.equal(dm.val_dataset.images, everything.train_dataset.images[index])


def test_val_size_validate_stage_reads_train_batches(cifar_dir: Path) -> None:
    (cifar_dir / "test_batch").unlink()
    dm = _ready(cifar_dir, stage="validate", val_size=10)
    assert len(dm.val_dataset) == 10 and dm.test_dataset is None


def test_val_size_too_large(cifar_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"val_size=100 must be smaller .* \(100\)"):
        _ready(cifar_dir, stage="fit", val_size=N_TRAIN)


def test_limit_train_and_limit_test(cifar_dir: Path) -> None:
    dm = _ready(cifar_dir, limit_train=40, limit_test=7)
    assert len(dm.train_dataset) == 40
    assert torch.bincount(dm.train_dataset.labels, minlength=10).tolist() == [4] * 10
    assert len(dm.test_dataset) == 7 and len(dm.val_dataset) == 7
    full = _ready(cifar_dir)
    assert torch.equal(dm.test_dataset.images, full.test_dataset.images[:7])

    with_val = _ready(cifar_dir, val_size=20, limit_train=50)
    assert len(with_val.train_dataset) == 50 and len(with_val.val_dataset) == 20
    assert not set(with_val.split_indices["train"].tolist()) & set(
        with_val.split_indices["val"].tolist()
    )
    assert len(_ready(cifar_dir, limit_train=10_000).train_dataset) == N_TRAIN


def test_augment_changes_train_not_val(cifar_dir: Path) -> None:
    plain = _ready(cifar_dir)
    augmented = _ready(cifar_dir, augment=True)
    torch.manual_seed(0)
    changed = sum(
        not torch.equal(augmented.train_dataset[i][0], plain.train_dataset[i][0]) for i in range(20)
    )
    assert changed >= 15
    for i in range(10):
        image, _ = augmented.train_dataset[i]
        assert image.dtype == torch.float32 and image.shape == (3, 32, 32)
        # Crop with zero padding and flips move pixels, they never create new values.
        allowed = set(plain.train_dataset[i][0].unique().tolist()) | {0.0}
        assert set(image.unique().tolist()) <= allowed
        torch.testing.assert_close(augmented.val_dataset[i][0], plain.val_dataset[i][0])
        torch.testing.assert_close(augmented.test_dataset[i][0], plain.test_dataset[i][0])


def test_augment_defaults_on() -> None:
    assert CIFAR10DataModule("unused").augment is True


def test_setup_is_idempotent_and_picklable(cifar_dir: Path) -> None:
    dm = _ready(cifar_dir, augment=True)
    train = dm.train_dataset
    dm.setup("fit")
    dm.setup("test")
    assert dm.train_dataset is train
    # ddp_spawn pickles the datamodule into each process.
    clone = pickle.loads(pickle.dumps(dm))
    torch.testing.assert_close(clone.test_dataset[0][0], dm.test_dataset[0][0])


def test_worker_loading(cifar_dir: Path) -> None:
    dm = _ready(cifar_dir, num_workers=1, eval_batch_size=32)
    images = torch.cat([batch[0] for batch in dm.test_dataloader()])
    torch.testing.assert_close(images, dm.test_dataset.images.float() / 255)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "batch_size must be a positive int, got 0"),
        ({"eval_batch_size": 0}, "eval_batch_size must be a positive int"),
        ({"num_workers": 1.5}, "num_workers must be a non-negative int"),
        ({"val_size": -1}, "val_size must be a non-negative int"),
        ({"seed": "0"}, "seed must be a non-negative int"),
        ({"limit_train": 0}, "limit_train must be a positive int or None"),
        ({"limit_test": -5}, "limit_test must be a positive int or None"),
        ({"augment": 1}, "augment must be a bool"),
        ({"data_dir": ""}, "data_dir must be a non-empty path"),
        ({"data_dir": None}, "data_dir must be a non-empty path"),
    ],
)
def test_argument_validation(kwargs: dict, message: str) -> None:
    kwargs.setdefault("data_dir", "unused")
    with pytest.raises(ValueError, match=message):
        CIFAR10DataModule(**kwargs)


def test_later_setup_calls_do_not_reread_train_batches(cifar_dir: Path) -> None:
    dm = _ready(cifar_dir, stage="fit", val_size=10)
    for name in TRAIN_FILES:
        (cifar_dir / name).unlink()
    dm.setup("validate")
    dm.setup("fit")
    assert len(dm.train_dataset) == N_TRAIN - 10 and len(dm.val_dataset) == 10
