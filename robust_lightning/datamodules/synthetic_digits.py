"""Digits 0-9 rendered from fonts with PIL: a synthetic source domain for synthetic-to-real tests.

Every image is drawn from a font (random face, size, rotation, stroke width, aspect, position,
background/foreground intensity and noise), so a model trained on it has seen no handwriting at
all; scikit-learn's handwritten digits (:class:`~robust_lightning.datamodules.DigitsDataModule`)
are then a real target domain with a genuine gap: handwriting versus type, blur of an 8x8 scan
upsampled versus crisp antialiased glyphs, a clean black background versus random intensities
and noise.

Fonts come from inside installed PyPI packages by default (matplotlib ships DejaVu, STIX and
Computer Modern faces in ``matplotlib/mpl-data/fonts/ttf``), so the data set is the same on any
machine with the same matplotlib; ``fonts="all"`` adds system fonts found under
``/usr/share/fonts`` (and the other usual folders) that pass a digit check.

Rendering is deterministic given the seed: image ``i`` of a split is drawn with its own
generator seeded by ``(seed, split, i)``, so it does not depend on how many images are rendered
or in which order. Rendered splits are cached in memory (per process) keyed by every argument
that changes pixels, so several runs in one process (a benchmark over methods and seeds) render
once.
"""

from __future__ import annotations

import glob
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from functools import cache, lru_cache
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from typing_extensions import override

from robust_lightning._validation import check_choice, check_number, check_range
from robust_lightning.datamodules._common import (
    InMemoryImageDataModule,
    TensorImageDataset,
    check_int_at_least,
    check_non_negative_int,
)
from robust_lightning.datamodules._records import check_image_dataset

__all__ = [
    "BUNDLED_DIGIT_FONTS",
    "SyntheticDigitsDataModule",
    "find_digit_fonts",
    "render_digit",
    "render_digits",
]

# Faces inside matplotlib/mpl-data/fonts/ttf whose code points 0x30-0x39 are lining digits.
# Left out: the Display/NonUni/Size faces (no digit glyphs), cmex10/cmsy10 (symbols at those code
# points) and cmmi10 (old-style digits, whose 3/4/5/7/9 descend below the baseline).
BUNDLED_DIGIT_FONTS: tuple[str, ...] = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-BoldItalic.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf",
    "STIXGeneralBolIta.ttf",
    "cmr10.ttf",
    "cmb10.ttf",
    "cmss10.ttf",
    "cmti10.ttf",
    "cmtt10.ttf",
)
_SYSTEM_FONT_DIRS: tuple[str, ...] = (
    "/usr/share/fonts",
    "/usr/local/share/fonts",
    os.path.expanduser("~/.fonts"),
    os.path.expanduser("~/.local/share/fonts"),
)
_FONT_EXTENSIONS = (".ttf", ".otf", ".TTF", ".OTF")
# Glyphs are drawn at this size (pixels) on a large canvas, cropped and resized to the target
# box, so one FreeType face per font file serves every output size.
_GLYPH_PX = 64
_SPLITS = {"train": 0, "val": 1, "test": 2}
# A digit check for system fonts: a face is kept when its glyphs are recognised as 0-9 by
# nearest-template matching against DejaVu Sans (symbol fonts put other shapes at 0x30-0x39).
_TEMPLATE_SIDE = 16
_MIN_TEMPLATE_MATCHES = 8


def _bundled_font_dir() -> str:
    import matplotlib

    return os.path.join(matplotlib.get_data_path(), "fonts", "ttf")


@cache
def _load_font(path: str) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, _GLYPH_PX)


def _glyph_mask(font: ImageFont.FreeTypeFont, digit: int, stroke_width: int = 0) -> np.ndarray:
    """Tight-cropped uint8 coverage mask of one digit (255 = ink)."""
    text = str(digit)
    left, top, right, bottom = font.getbbox(text, stroke_width=stroke_width)
    pad = 2 + stroke_width
    canvas = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
    ImageDraw.Draw(canvas).text(
        (pad - left, pad - top), text, font=font, fill=255, stroke_width=stroke_width, stroke_fill=255
    )
    array = np.asarray(canvas)
    rows = np.flatnonzero(array.max(axis=1))
    cols = np.flatnonzero(array.max(axis=0))
    if rows.size == 0:
        return np.zeros((1, 1), dtype=np.uint8)
    return array[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _template(mask: np.ndarray) -> np.ndarray:
    image = Image.fromarray(mask).resize((_TEMPLATE_SIDE, _TEMPLATE_SIDE), Image.Resampling.BILINEAR)
    vector = np.asarray(image, dtype=np.float64).ravel()
    vector -= vector.mean()
    norm = np.linalg.norm(vector)
    return vector / norm if norm > 0 else vector


@lru_cache(maxsize=1)
def _reference_templates() -> np.ndarray:
    font = _load_font(os.path.join(_bundled_font_dir(), "DejaVuSans.ttf"))
    return np.stack([_template(_glyph_mask(font, d)) for d in range(10)])


def _renders_digits(path: str) -> bool:
    """True when a font file draws ten distinct glyphs that look like lining digits 0-9."""
    try:
        font = _load_font(path)
        masks = [_glyph_mask(font, d) for d in range(10)]
    except (OSError, ValueError):
        return False
    if any(mask.size <= 1 or mask.max() == 0 for mask in masks):
        return False
    templates = np.stack([_template(mask) for mask in masks])
    if len({t.tobytes() for t in templates}) < 10:
        return False
    predicted = (templates @ _reference_templates().T).argmax(axis=1)
    return int((predicted == np.arange(10)).sum()) >= _MIN_TEMPLATE_MATCHES


def find_digit_fonts(fonts: str | Sequence[str] = "bundled") -> list[str]:
    """Resolves a font selection to a sorted, de-duplicated list of font file paths.

    Args:
        fonts: ``"bundled"`` (the matplotlib faces in :data:`BUNDLED_DIGIT_FONTS`), ``"system"``
            (fonts under ``/usr/share/fonts`` and the other usual folders that pass a digit
            check), ``"all"`` (both), or a list of font files / glob patterns (taken as given:
            the caller vouches that they draw digits).

    Returns:
        Paths sorted by the face's (family, style) name, one per face: the same face installed
        twice (matplotlib's DejaVu and the system's) counts once, so ``"all"`` does not weight
        it double.

    Raises:
        ValueError: If ``fonts`` is not a known keyword or list, or nothing usable is found.
    """
    if isinstance(fonts, str):
        if fonts not in ("bundled", "system", "all"):
            raise ValueError(
                f"fonts must be 'bundled', 'system', 'all' or a list of font files, got {fonts!r}"
            )
        candidates: list[str] = []
        if fonts in ("bundled", "all"):
            folder = _bundled_font_dir()
            candidates += [os.path.join(folder, name) for name in BUNDLED_DIGIT_FONTS
                           if os.path.isfile(os.path.join(folder, name))]
        if fonts in ("system", "all"):
            system = sorted(
                path
                for folder in _SYSTEM_FONT_DIRS
                for path in glob.glob(os.path.join(folder, "**", "*"), recursive=True)
                if path.endswith(_FONT_EXTENSIONS)
            )
            candidates += [path for path in system if _renders_digits(path)]
    elif isinstance(fonts, Sequence) and all(isinstance(f, str) for f in fonts) and len(fonts) > 0:
        candidates = []
        for pattern in fonts:
            matches = sorted(glob.glob(os.path.expanduser(pattern))) or [pattern]
            for path in matches:
                if not os.path.isfile(path):
                    raise ValueError(f"fonts: no font file at {path!r}")
                candidates.append(path)
    else:
        raise ValueError(
            f"fonts must be 'bundled', 'system', 'all' or a non-empty list of font files, got {fonts!r}"
        )
    by_name: dict[tuple[str, str], str] = {}
    for path in candidates:
        try:
            name = tuple(_load_font(path).getname())
        except OSError as error:
            raise ValueError(f"fonts: cannot load {path!r} as a font ({error})") from error
        by_name.setdefault((str(name[0]), str(name[1])), path)
    if not by_name:
        raise ValueError(
            f"fonts={fonts!r} found no usable font; use fonts='bundled' (matplotlib's fonts) or "
            "pass font files"
        )
    return [by_name[key] for key in sorted(by_name)]


def render_digit(
    digit: int,
    rng: np.random.Generator,
    fonts: Sequence[str],
    image_size: int,
    *,
    scale_range: tuple[float, float] = (0.6, 0.95),
    aspect_range: tuple[float, float] = (0.8, 1.25),
    rotation: float = 15.0,
    stroke_range: tuple[int, int] = (0, 3),
    translate: float = 0.1,
    background_range: tuple[float, float] = (0.0, 0.35),
    foreground_range: tuple[float, float] = (0.65, 1.0),
    noise_range: tuple[float, float] = (0.0, 0.08),
    blur_range: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """Draws one digit as a ``(image_size, image_size)`` float32 array in ``[0, 1]``.

    The glyph is drawn at 64 px, rotated, cropped to its ink, resized so its height is
    ``scale * image_size`` (width times ``aspect``), pasted at a jittered centre, then mapped to
    ``background + (foreground - background) * coverage`` plus Gaussian noise. The polarity
    (light ink on dark, like the real digits, or dark ink on light, like print) follows the two
    ranges; it and every other appearance choice is a source-domain bias a robust model should
    not rely on.

    Args:
        digit: The class, 0-9.
        rng: Generator all randomness comes from.
        fonts: Font files to choose from uniformly.
        image_size: Output side in pixels.
        scale_range: Glyph height as a fraction of the side.
        aspect_range: Multiplier of the glyph's natural width.
        rotation: Maximum absolute rotation in degrees.
        stroke_range: Extra stroke width in pixels at 64 px glyph size (bolder strokes).
        translate: Maximum centre offset as a fraction of the side.
        background_range: Background intensity range.
        foreground_range: Ink intensity range.
        noise_range: Range of the per-image noise standard deviation.
        blur_range: Range of a Gaussian blur radius in output pixels (0 = crisp).

    Returns:
        The image as float32, values in ``[0, 1]``.
    """
    font = _load_font(fonts[int(rng.integers(len(fonts)))])
    stroke = int(rng.integers(stroke_range[0], stroke_range[1] + 1))
    glyph = Image.fromarray(_glyph_mask(font, digit, stroke_width=stroke))
    angle = float(rng.uniform(-rotation, rotation))
    glyph = glyph.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=0)
    array = np.asarray(glyph)
    rows, cols = np.flatnonzero(array.max(axis=1)), np.flatnonzero(array.max(axis=0))
    glyph = glyph.crop((int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1))

    # Size the glyph on a 4x super-sampled canvas, then downsample once with a box filter so the
    # strokes are antialiased like a real low-resolution image.
    supersample = 4
    side = image_size * supersample
    height = float(rng.uniform(*scale_range)) * side
    width = height * glyph.width / glyph.height * float(rng.uniform(*aspect_range))
    width, height = max(1, min(side, round(width))), max(1, min(side, round(height)))
    glyph = glyph.resize((width, height), Image.Resampling.LANCZOS)
    centre_x = side / 2 + float(rng.uniform(-translate, translate)) * side
    centre_y = side / 2 + float(rng.uniform(-translate, translate)) * side
    left = int(np.clip(round(centre_x - width / 2), 0, side - width))
    top = int(np.clip(round(centre_y - height / 2), 0, side - height))
    canvas = Image.new("L", (side, side), 0)
    canvas.paste(glyph, (left, top))
    canvas = canvas.resize((image_size, image_size), Image.Resampling.BOX)
    blur = float(rng.uniform(*blur_range))
    if blur > 0:
        canvas = canvas.filter(ImageFilter.GaussianBlur(blur))

    coverage = np.asarray(canvas, dtype=np.float32) / 255.0
    background = float(rng.uniform(*background_range))
    foreground = float(rng.uniform(*foreground_range))
    image = background + (foreground - background) * coverage
    noise_std = float(rng.uniform(*noise_range))
    if noise_std > 0:
        image = image + rng.normal(0.0, noise_std, size=image.shape).astype(np.float32)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def render_digits(
    count: int, seed: int, split: str, fonts: Sequence[str], image_size: int, **appearance: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """Renders ``count`` class-balanced digits of one split.

    Labels cycle 0-9 (so every class has ``count // 10`` or one more images); image ``i`` draws
    all its randomness from ``np.random.default_rng((seed, split_id, i))``, so a prefix of a
    larger render is identical to a smaller render.

    Args:
        count: Number of images.
        seed: Data seed.
        split: ``"train"``, ``"val"`` or ``"test"``; each split has its own stream.
        fonts: Font files.
        image_size: Output side.
        **appearance: Keyword ranges forwarded to :func:`render_digit`.

    Returns:
        ``(images, labels)``: ``(count, 1, image_size, image_size)`` uint8 and ``(count,)`` int64.
    """
    split_id = _SPLITS[split]
    images = np.empty((count, 1, image_size, image_size), dtype=np.uint8)
    labels = np.arange(count, dtype=np.int64) % 10
    for index in range(count):
        rng = np.random.default_rng((seed, split_id, index))
        image = render_digit(int(labels[index]), rng, fonts, image_size, **appearance)
        # uint8 storage is 4x smaller; TensorImageDataset converts back to float in [0, 1].
        images[index, 0] = np.round(image * 255.0).astype(np.uint8)
    return torch.from_numpy(images), torch.from_numpy(labels)


class _RenderCache:
    """Process-wide LRU of rendered splits, keyed by everything that changes the pixels."""

    def __init__(self, max_entries: int = 16) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[Any, ...], tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_render(self, key: tuple[Any, ...], render: Any) -> tuple[torch.Tensor, torch.Tensor]:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
        value = render()
        with self._lock:
            self._entries[key] = value
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


RENDER_CACHE = _RenderCache()


class SyntheticDigitsDataModule(InMemoryImageDataModule):
    """Font-rendered digits 0-9 (train/val/test), a synthetic source domain.

    Images are ``(channels, image_size, image_size)`` float32 in ``[0, 1]``, labels int64 in
    0-9, batches ``[images, labels]``. Each split is class-balanced and rendered from its own
    seeded stream (see :func:`render_digits`), so changing ``num_train`` leaves the validation
    and test images unchanged.

    Args:
        num_train: Training images.
        num_val: Validation images (source-domain validation).
        num_test: Test images.
        image_size: Output side (>= 8). The default 32 matches CIFAR-style backbones; the real
            target (:class:`DigitsDataModule`) must use the same size and channels.
        channels: 1 (grey) or 3 (the grey image repeated, for RGB backbones).
        seed: Rendering seed.
        fonts: ``"bundled"`` (matplotlib's fonts, the same everywhere), ``"system"``, ``"all"``
            or a list of font files / glob patterns; see :func:`find_digit_fonts`.
        scale_range: Glyph height as a fraction of the side, ``(min, max)`` in ``(0, 1]``.
        aspect_range: Multiplier of a glyph's natural width, ``(min, max)`` in ``(0, 4]``.
        rotation: Maximum absolute rotation in degrees, in ``[0, 180]``.
        stroke_range: Extra stroke width at 64 px glyph size, ``(min, max)`` ints in ``[0, 8]``.
        translate: Maximum centre jitter as a fraction of the side, in ``[0, 0.5]``.
        background_range: Background intensity ``(min, max)`` in ``[0, 1]``.
        foreground_range: Ink intensity ``(min, max)`` in ``[0, 1]``; must lie entirely above
            ``background_range`` (light ink on dark, the real digits' polarity) or entirely below
            it (dark ink on light, printed digits), so the ink is always visible.
        noise_range: Per-image Gaussian noise std ``(min, max)`` in ``[0, 0.5]``.
        blur_range: Gaussian blur radius ``(min, max)`` in output pixels, in ``[0, 4]``.
        batch_size: Training batch size.
        eval_batch_size: Batch size for validation, test and predict (``None``: ``batch_size``).
        num_workers: DataLoader worker processes.

    Raises:
        ValueError: If an argument is out of range (the message names it).

    Example:
        >>> dm = SyntheticDigitsDataModule(num_train=100, num_val=20, num_test=20, image_size=16)
        >>> dm.setup("fit")
        >>> images, labels = next(iter(dm.train_dataloader()))
        >>> images.shape
        torch.Size([100, 1, 16, 16])
    """

    def __init__(
        self,
        num_train: int = 10000,
        num_val: int = 1000,
        num_test: int = 1000,
        image_size: int = 32,
        channels: int = 1,
        seed: int = 0,
        fonts: str | list[str] = "bundled",
        scale_range: tuple[float, float] = (0.6, 0.95),
        aspect_range: tuple[float, float] = (0.8, 1.25),
        rotation: float = 15.0,
        stroke_range: tuple[int, int] = (0, 3),
        translate: float = 0.1,
        background_range: tuple[float, float] = (0.0, 0.35),
        foreground_range: tuple[float, float] = (0.65, 1.0),
        noise_range: tuple[float, float] = (0.0, 0.08),
        blur_range: tuple[float, float] = (0.0, 0.0),
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, eval_batch_size=eval_batch_size, num_workers=num_workers)
        self.num_train = check_int_at_least("num_train", num_train, 1)
        self.num_val = check_non_negative_int("num_val", num_val)
        self.num_test = check_non_negative_int("num_test", num_test)
        self.image_size = check_int_at_least("image_size", image_size, 8)
        self.channels = int(check_choice("channels", channels, (1, 3)))
        self.seed = check_non_negative_int("seed", seed)
        # Resolve fonts now so a bad font argument fails at construction, not mid-setup.
        self.font_paths = find_digit_fonts(fonts)
        check_number("rotation", rotation, 0.0, 180.0, reason="degrees")
        check_number("translate", translate, 0.0, 0.5, reason="a fraction of the image size")
        scale = check_range("scale_range", scale_range, 0.0, 1.0)
        if scale[0] <= 0.0:
            raise ValueError(f"scale_range must be > 0, got {scale_range!r}")
        aspect = check_range("aspect_range", aspect_range, 0.0, 4.0)
        if aspect[0] <= 0.0:
            raise ValueError(f"aspect_range must be > 0, got {aspect_range!r}")
        stroke = check_range("stroke_range", stroke_range, 0, 8)
        if any(float(v) != int(v) for v in stroke):
            raise ValueError(f"stroke_range must hold ints, got {stroke_range!r}")
        background = check_range("background_range", background_range, 0.0, 1.0)
        foreground = check_range("foreground_range", foreground_range, 0.0, 1.0)
        if not (foreground[0] > background[1] or foreground[1] < background[0]):
            raise ValueError(
                f"foreground_range {foreground_range!r} must lie entirely above or below "
                f"background_range {background_range!r}, or some digits would be invisible"
            )
        self.appearance: dict[str, Any] = {
            "scale_range": scale,
            "aspect_range": aspect,
            "rotation": float(rotation),
            "stroke_range": (int(stroke[0]), int(stroke[1])),
            "translate": float(translate),
            "background_range": background,
            "foreground_range": foreground,
            "noise_range": check_range("noise_range", noise_range, 0.0, 0.5),
            "blur_range": check_range("blur_range", blur_range, 0.0, 4.0),
        }
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

    def render_split(self, split: str, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Renders (or fetches from the in-memory cache) ``count`` images of ``split``.

        Args:
            split: ``"train"``, ``"val"`` or ``"test"``.
            count: Number of images.

        Returns:
            ``(images, labels)``: uint8 ``(count, channels, S, S)`` and int64 ``(count,)``.
        """
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {tuple(_SPLITS)}, got {split!r}")
        # Font files are keyed by (path, size, mtime): replacing a font invalidates the cache.
        fonts_key = tuple((p, os.path.getsize(p), os.path.getmtime(p)) for p in self.font_paths)
        key = (split, count, self.seed, self.image_size, fonts_key,
               tuple(sorted((k, repr(v)) for k, v in self.appearance.items())))
        images, labels = RENDER_CACHE.get_or_render(
            key,
            lambda: render_digits(count, self.seed, split, self.font_paths, self.image_size,
                                  **self.appearance),
        )
        if self.channels == 3:
            images = images.expand(-1, 3, -1, -1)
        return images, labels

    @override
    def setup(self, stage: str | None = None) -> None:
        """Renders the three splits once (from the cache when already rendered in this process).

        Args:
            stage: Lightning stage; every stage gets all three splits (they are small).
        """
        if self.train_dataset is not None:
            return
        splits = {split: self.render_split(split, size)
                  for split, size in (("train", self.num_train), ("val", self.num_val), ("test", self.num_test))}
        for split, (images, labels) in splits.items():
            check_image_dataset(images, labels, num_classes=self.num_classes, image_shape=self.image_shape,
                                source=f"synthetic digits {split} split")
        self.train_dataset = TensorImageDataset(*splits["train"])
        self.val_dataset = TensorImageDataset(*splits["val"])
        self.test_dataset = TensorImageDataset(*splits["test"])
