"""SyntheticDigitsDataModule: font-rendered digits as a synthetic source domain."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robust_lightning.datamodules import SyntheticDigitsDataModule
from robust_lightning.datamodules.synthetic_digits import (
    BUNDLED_DIGIT_FONTS,
    RENDER_CACHE,
    find_digit_fonts,
    render_digit,
    render_digits,
)


def _dm(**kwargs) -> SyntheticDigitsDataModule:
    defaults = {"num_train": 60, "num_val": 20, "num_test": 20, "image_size": 16, "batch_size": 16}
    dm = SyntheticDigitsDataModule(**{**defaults, **kwargs})
    dm.setup("fit")
    return dm


def test_batches_shapes_dtypes_range_and_balance() -> None:
    dm = _dm()
    assert dm.num_classes == 10 and dm.classes == [str(d) for d in range(10)]
    assert dm.image_shape == (1, 16, 16)
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (16, 1, 16, 16) and images.dtype == torch.float32
    assert labels.dtype == torch.int64
    assert 0.0 <= images.min() and images.max() <= 1.0
    # Class-balanced splits: 60 training images are 6 of each digit.
    assert torch.bincount(dm.train_dataset.labels, minlength=10).tolist() == [6] * 10
    assert len(dm.val_dataset) == 20 and len(dm.test_dataset) == 20


def test_rendering_is_deterministic_prefix_stable_and_seeded() -> None:
    fonts = find_digit_fonts("bundled")
    small, small_labels = render_digits(10, 3, "train", fonts, 16)
    large, large_labels = render_digits(30, 3, "train", fonts, 16)
    # Image i has its own stream: a longer render starts with the shorter one.
    assert torch.equal(small, large[:10]) and torch.equal(small_labels, large_labels[:10])
    other_seed, _ = render_digits(10, 4, "train", fonts, 16)
    other_split, _ = render_digits(10, 3, "val", fonts, 16)
    assert not torch.equal(small, other_seed)
    assert not torch.equal(small, other_split)


def test_validation_split_does_not_depend_on_num_train() -> None:
    a, b = _dm(num_train=20), _dm(num_train=40)
    assert torch.equal(a.val_dataset.images, b.val_dataset.images)


def test_images_are_digits_with_ink_brighter_than_background() -> None:
    rng = np.random.default_rng(0)
    fonts = find_digit_fonts("bundled")
    image = render_digit(8, rng, fonts, 32, noise_range=(0.0, 0.0), background_range=(0.1, 0.1),
                         foreground_range=(0.9, 0.9), translate=0.0)
    assert image.shape == (32, 32) and image.dtype == np.float32
    assert image.min() == pytest.approx(0.1, abs=1e-6) and image.max() == pytest.approx(0.9, abs=0.02)
    ink = image > 0.5
    # A centred glyph: ink in the middle, clean border.
    assert 0.05 < ink.mean() < 0.6
    assert not ink[0].any() and not ink[-1].any()


def test_different_digits_render_differently_and_one_font_class_structure() -> None:
    """Each class is a consistent shape: same-class renders correlate more than other-class ones."""
    fonts = find_digit_fonts("bundled")
    images, labels = render_digits(200, 0, "train", fonts, 16, rotation=0.0, translate=0.0,
                                   noise_range=(0.0, 0.0))
    x = images.float().flatten(1)
    x = (x - x.mean(1, keepdim=True)) / x.std(1, keepdim=True)
    centroids = torch.stack([x[labels == c].mean(0) for c in range(10)])
    nearest = (x @ centroids.T).argmax(1)
    assert (nearest == labels).float().mean() > 0.6


def test_three_channels_repeat_the_grey_image() -> None:
    dm = _dm(channels=3)
    image, _ = dm.train_dataset[0]
    assert image.shape == (3, 16, 16)
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])


def test_render_cache_returns_the_same_tensors() -> None:
    RENDER_CACHE.clear()
    a = _dm(seed=7).render_split("train", 20)
    b = _dm(seed=7).render_split("train", 20)
    assert a[0] is b[0]
    c = _dm(seed=7, rotation=0.0).render_split("train", 20)
    assert c[0] is not a[0]


def test_fonts_keywords_and_explicit_files(tmp_path) -> None:
    bundled = find_digit_fonts("bundled")
    assert 5 <= len(bundled) <= len(BUNDLED_DIGIT_FONTS)
    one = find_digit_fonts([bundled[0]])
    assert one == [bundled[0]]
    dm = _dm(fonts=[bundled[0]])
    assert dm.font_paths == [bundled[0]]
    not_a_font = tmp_path / "fake.ttf"
    not_a_font.write_bytes(b"not a font")
    with pytest.raises(ValueError, match="fonts"):
        find_digit_fonts([str(not_a_font)])
    with pytest.raises(ValueError, match="fonts"):
        find_digit_fonts([str(tmp_path / "missing.ttf")])
    with pytest.raises(ValueError, match="fonts"):
        find_digit_fonts("comic")


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"num_train": 0}, "num_train"),
        ({"image_size": 4}, "image_size"),
        ({"channels": 2}, "channels"),
        ({"rotation": 200.0}, "rotation"),
        ({"translate": 0.7}, "translate"),
        ({"scale_range": (0.9, 0.5)}, "scale_range"),
        ({"scale_range": 0.5}, "scale_range"),
        ({"stroke_range": (0, 1.5)}, "stroke_range"),
        ({"foreground_range": (0.2, 0.5)}, "foreground_range"),
        ({"noise_range": (0.0, 0.9)}, "noise_range"),
        ({"fonts": 3}, "fonts"),
    ],
)
def test_bad_arguments_raise_early(kwargs, name) -> None:
    with pytest.raises(ValueError, match=name):
        SyntheticDigitsDataModule(**kwargs)


def test_printed_polarity_dark_ink_on_light_background() -> None:
    dm = _dm(background_range=(0.9, 0.9), foreground_range=(0.1, 0.1), noise_range=(0.0, 0.0), translate=0.0)
    image, _ = dm.train_dataset[0]
    assert image[0, 0, 0].item() == pytest.approx(0.9, abs=1 / 255)
    assert image.min().item() == pytest.approx(0.1, abs=0.05)
    # Overlapping ranges would make some digits invisible.
    with pytest.raises(ValueError, match="foreground_range"):
        SyntheticDigitsDataModule(background_range=(0.4, 0.8), foreground_range=(0.1, 0.5))


def test_digit_check_rejects_symbol_fonts_and_all_keeps_one_file_per_face() -> None:
    import os

    from robust_lightning.datamodules.synthetic_digits import (
        _bundled_font_dir,
        _renders_digits,
    )

    folder = _bundled_font_dir()
    assert _renders_digits(os.path.join(folder, "DejaVuSerif.ttf"))
    # cmex10 puts large delimiters at the code points of 0-9.
    assert not _renders_digits(os.path.join(folder, "cmex10.ttf"))
    everything = find_digit_fonts("all")
    assert len(everything) >= len(find_digit_fonts("bundled"))
    # DejaVu Sans is in matplotlib and often in /usr/share/fonts too: counted once.
    names = [os.path.basename(path) for path in everything]
    assert names.count("DejaVuSans.ttf") == 1
