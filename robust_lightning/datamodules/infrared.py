"""Infrared object detection data: COCO-format loader and a synthetic thermal-scene generator.

Batches are dicts ``{"images": (B, C, H, W) float in [0, 1], "boxes": [(N_i, 4) xyxy pixels],
"labels": [(N_i,) int64], "image_ids": (B,) int64}``. Infrared sensors are single-band, so images
are read as one gray channel by default (``gray = 0.2989 R + 0.587 G + 0.114 B``, the weights the
KGAT code uses for its radiation statistics); detectors see it replicated to three channels.

Real datasets are read in COCO format (FLIR ADAS ships it; LLVIP and M3FD ship Pascal VOC XML,
convert them first - see ``lightning_modules/kgat/README.md``). The synthetic generator writes
the same format, so the loader is exercised by every test that uses the generated scenes.
"""

from __future__ import annotations

import json
import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningDataModule
from PIL import Image
from scipy import ndimage
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from typing_extensions import override

from robust_lightning._validation import check_int_range, check_number, is_int, is_number
from robust_lightning.datamodules._common import (
    EpochShuffleSampler,
    check_non_negative_int,
    check_optional_positive_int,
    check_positive_int,
    generate_once,
)
from robust_lightning.errors import DataFileError, InvalidArgumentError, MissingFileError

__all__ = [
    "GRAY_WEIGHTS",
    "THERMAL_CLASSES",
    "CocoDetectionDataset",
    "InfraredDetectionDataModule",
    "SyntheticThermalDataModule",
    "ThermalClass",
    "collate_detection",
    "generate_thermal_scenes",
    "radiance_to_gray",
    "to_gray",
    "voc_to_coco",
]

GRAY_WEIGHTS: tuple[float, float, float] = (0.2989, 0.587, 0.114)
STEFAN_BOLTZMANN = 5.670374419e-8  # W m^-2 K^-4
# Radiances outside [sigma 255^4, sigma 335^4] saturate: the span of an uncooled LWIR camera's
# scene range for outdoor traffic (about -18 C to 62 C), fixed (no per-image gain control) so a
# class's gray level means the same in every image.
_SENSOR_RANGE_K: tuple[float, float] = (255.0, 335.0)


@dataclass(frozen=True)
class ThermalClass:
    """One object class of the synthetic scenes.

    Attributes:
        name: Category name written to the annotations.
        temperature: Mean surface temperature (K); instances jitter by ``temperature_jitter``.
        emissivity: Surface emissivity in (0, 1]; low for bare metal, ~0.98 for skin.
        shape: ``"ellipse"``, ``"box"`` (rounded rectangle) or ``"wheels"`` (two rings and a
            bar: a bicycle seen from the side).
        aspect: Height / width of the object's box.
        size: Range of the box height in pixels at 128 px image height (scaled with the image).
    """

    name: str
    temperature: float
    emissivity: float
    shape: Literal["ellipse", "box", "wheels"]
    aspect: float
    size: tuple[float, float]
    temperature_jitter: float = 2.0


# Class temperatures/emissivities are textbook orders of magnitude (clothed people ~305 K at
# the surface, running cars warmer, bicycles' metal frames have low emissivity and look colder
# than the road), chosen so the radiance order car > person > background > bicycle holds in
# every image: the stable rank order KGAT's thermal-radiation knowledge relies on.
THERMAL_CLASSES: tuple[ThermalClass, ...] = (
    ThermalClass("person", 306.0, 0.98, "ellipse", 2.4, (22.0, 44.0), 1.5),
    ThermalClass("car", 322.0, 0.92, "box", 0.55, (18.0, 34.0), 2.5),
    ThermalClass("bicycle", 284.0, 0.60, "wheels", 0.6, (16.0, 28.0), 2.0),
)


def to_gray(image: Tensor) -> Tensor:
    """``(C, H, W)`` or ``(H, W)`` image in [0, 1] -> ``(H, W)`` gray (0.2989 R + 0.587 G + 0.114 B)."""
    if image.dim() == 2:
        return image
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"image must be (H, W), (1, H, W) or (3, H, W), got shape {tuple(image.shape)}")
    if image.shape[0] == 1:
        return image[0]
    weights = torch.tensor(GRAY_WEIGHTS, dtype=image.dtype, device=image.device).view(3, 1, 1)
    return (image * weights).sum(0)


def radiance_to_gray(radiance: np.ndarray | float) -> np.ndarray:
    """Gray level in [0, 1] of an exitance ``eps sigma T^4`` (W m^-2) under the fixed sensor range."""
    lo, hi = (STEFAN_BOLTZMANN * t**4 for t in _SENSOR_RANGE_K)
    return np.clip((np.asarray(radiance, dtype=np.float64) - lo) / (hi - lo), 0.0, 1.0)


def _object_mask(shape: str, height: int, width: int, supersample: int = 4) -> np.ndarray:
    """Anti-aliased (H, W) coverage mask in [0, 1] of a class silhouette."""
    h, w = height * supersample, width * supersample
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    yy = (yy + 0.5) / h * 2 - 1
    xx = (xx + 0.5) / w * 2 - 1
    if shape == "ellipse":
        # A body (lower ellipse) and a head (small disc at the top).
        body = ((xx / 0.95) ** 2 + ((yy - 0.15) / 0.85) ** 2) <= 1.0
        head = (xx / 0.45) ** 2 + ((yy + 0.78) / 0.2) ** 2 <= 1.0
        mask = body | head
    elif shape == "box":
        r = 0.25
        dx = np.clip(np.abs(xx) - (1 - r), 0, None)
        dy = np.clip(np.abs(yy) - (1 - r), 0, None)
        mask = dx**2 + dy**2 <= r**2
    elif shape == "wheels":
        ring = lambda cx: np.abs(np.hypot((xx - cx) / 0.42, (yy - 0.3) / 0.62) - 1.0) < 0.35
        bar = (np.abs(yy + 0.05) < 0.12) & (np.abs(xx) < 0.7)
        post = (np.abs(xx - 0.1) < 0.1) & (yy > -0.9) & (yy < 0.3)
        mask = ring(-0.55) | ring(0.55) | bar | post
    else:
        raise ValueError(f"shape must be 'ellipse', 'box' or 'wheels', got {shape!r}")
    return mask.reshape(height, supersample, width, supersample).mean(axis=(1, 3))


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Background radiance: sky above a warmer road, a smooth gradient and soft clutter."""
    horizon = rng.uniform(0.25, 0.5) * height
    t_sky, t_ground = rng.uniform(265.0, 278.0), rng.uniform(280.0, 292.0)
    rows = np.arange(height)[:, None]
    blend = 1.0 / (1.0 + np.exp(-(rows - horizon) / (0.04 * height)))
    temperature = t_sky + (t_ground - t_sky) * blend + np.zeros((1, width))
    clutter = ndimage.gaussian_filter(rng.normal(0.0, 1.0, (height, width)), sigma=0.08 * height)
    temperature = temperature + 2.5 * clutter / (clutter.std() + 1e-8)
    return 0.95 * STEFAN_BOLTZMANN * temperature**4


def _render_scene(
    rng: np.random.Generator,
    height: int,
    width: int,
    classes: Sequence[ThermalClass],
    objects: tuple[int, int],
    noise_std: float,
) -> tuple[np.ndarray, list[tuple[int, list[float]]]]:
    radiance = _background(rng, height, width)
    annotations: list[tuple[int, list[float]]] = []
    occupied = np.zeros((height, width), dtype=bool)
    scale = height / 128.0
    for _ in range(int(rng.integers(objects[0], objects[1] + 1))):
        label = int(rng.integers(len(classes)))
        cls = classes[label]
        for _attempt in range(20):  # rejection-sample a free spot; skip the object if none
            box_h = max(4, int(round(rng.uniform(*cls.size) * scale)))
            box_w = max(4, int(round(box_h / cls.aspect)))
            if box_h >= height or box_w >= width:
                continue
            y0 = int(rng.integers(0, height - box_h))
            x0 = int(rng.integers(0, width - box_w))
            if occupied[y0:y0 + box_h, x0:x0 + box_w].any():
                continue
            occupied[y0:y0 + box_h, x0:x0 + box_w] = True
            coverage = _object_mask(cls.shape, box_h, box_w)
            temperature = cls.temperature + rng.uniform(-1.0, 1.0) * cls.temperature_jitter
            # A soft hot spot (head, engine) on top of the mean temperature, as real objects
            # are not isothermal; the class mean stays ordered.
            yy, xx = np.mgrid[0:box_h, 0:box_w]
            spot = np.exp(-(((yy - rng.uniform(0.2, 0.8) * box_h) / (0.3 * box_h)) ** 2
                            + ((xx - rng.uniform(0.2, 0.8) * box_w) / (0.3 * box_w)) ** 2))
            object_radiance = cls.emissivity * STEFAN_BOLTZMANN * (temperature + 1.5 * (spot - 0.3)) ** 4
            patch = radiance[y0:y0 + box_h, x0:x0 + box_w]
            radiance[y0:y0 + box_h, x0:x0 + box_w] = coverage * object_radiance + (1 - coverage) * patch
            annotations.append((label, [float(x0), float(y0), float(box_w), float(box_h)]))
            break
    gray = radiance_to_gray(radiance)
    # Sensor: optics blur, fixed-pattern column offsets, temporal noise.
    gray = ndimage.gaussian_filter(gray, sigma=0.6)
    gray = gray + rng.normal(0.0, noise_std / 2, (1, width)) + rng.normal(0.0, noise_std, (height, width))
    return np.clip(gray, 0.0, 1.0), annotations


def generate_thermal_scenes(
    root: str | os.PathLike[str],
    n_train: int = 400,
    n_val: int = 100,
    n_test: int = 100,
    image_size: int | Sequence[int] = 96,
    objects_per_image: Sequence[int] = (1, 4),
    noise_std: float = 0.02,
    seed: int = 0,
    classes: Sequence[ThermalClass] = THERMAL_CLASSES,
    overwrite: bool = False,
) -> Path:
    """Generates (or reuses) synthetic thermal scenes as a COCO-format dataset.

    Each image is a background of sky and road (265-292 K, emissivity 0.95, smooth clutter) with
    1-4 non-overlapping objects; an object's pixels radiate ``eps sigma T^4`` (Stefan-Boltzmann)
    with its class's temperature and emissivity, a per-instance temperature jitter and a soft hot
    spot. Radiance maps to gray through a fixed sensor range (255-335 K), then optics blur,
    column fixed-pattern noise and temporal noise (``noise_std``) are added. The default classes
    are ordered car > person > background > bicycle in gray level in every image.

    Layout: ``annotations/{train,val,test}.json`` (COCO), ``images/<split>/<id>.png`` (8-bit gray),
    ``manifest.json``. An existing dataset with the same parameters is reused.

    Returns:
        ``Path(root)``.
    """
    n_train = check_positive_int("n_train", n_train)
    n_val = check_positive_int("n_val", n_val)
    n_test = check_positive_int("n_test", n_test)
    height, width = _check_image_size(image_size)
    if height < 32 or width < 32:
        raise ValueError(f"image_size must be at least 32 pixels, got {image_size!r}")
    check_int_range("objects_per_image", objects_per_image, 1)
    check_number("noise_std", noise_std, 0.0, 0.5, high_open=True)
    if not classes or not all(isinstance(c, ThermalClass) for c in classes):
        raise ValueError("classes must be a non-empty list of ThermalClass")
    fingerprint = {
        "generator": "thermal_scenes/1",
        "n": [n_train, n_val, n_test],
        "image_size": [height, width],
        "objects_per_image": list(objects_per_image),
        "noise_std": float(noise_std),
        "seed": int(seed),
        "classes": [asdict(c) for c in classes],
    }
    fingerprint = json.loads(json.dumps(fingerprint))  # tuples -> lists, as read back from disk

    def write(out: Path) -> dict[str, Any]:
        categories = [{"id": i + 1, "name": c.name} for i, c in enumerate(classes)]
        for split_index, (split, count) in enumerate((("train", n_train), ("val", n_val), ("test", n_test))):
            rng = np.random.default_rng([int(seed), split_index])
            image_dir = out / "images" / split
            image_dir.mkdir(parents=True)
            images, annotations = [], []
            for image_id in range(1, count + 1):
                gray, objects = _render_scene(rng, height, width, classes, tuple(objects_per_image), float(noise_std))
                file_name = f"{image_id:06d}.png"
                Image.fromarray(np.round(gray * 255).astype(np.uint8), mode="L").save(image_dir / file_name)
                images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
                for label, bbox in objects:
                    annotations.append({
                        "id": len(annotations) + 1, "image_id": image_id, "category_id": label + 1,
                        "bbox": bbox, "area": bbox[2] * bbox[3], "iscrowd": 0,
                    })
            (out / "annotations").mkdir(exist_ok=True)
            (out / "annotations" / f"{split}.json").write_text(json.dumps(
                {"images": images, "annotations": annotations, "categories": categories}
            ))
        return {"gray_order": _gray_order(classes)}

    return generate_once(root, fingerprint, write, overwrite=overwrite)


def _gray_order(classes: Sequence[ThermalClass]) -> list[str]:
    levels = {c.name: float(radiance_to_gray(c.emissivity * STEFAN_BOLTZMANN * c.temperature**4)) for c in classes}
    return sorted(levels, key=levels.__getitem__, reverse=True)


def _check_image_size(value: Any) -> tuple[int, int]:
    """``image_size`` as ``(height, width)``: one positive int (a square) or a pair of them."""
    size = (value, value) if is_int(value) else value
    if (isinstance(size, str) or not isinstance(size, Sequence) or len(size) != 2
            or not all(is_int(v) and v > 0 for v in size)):
        raise InvalidArgumentError(f"image_size must be a positive int or [height, width], got {value!r}")
    return int(size[0]), int(size[1])


@dataclass
class _Record:
    image_id: int
    path: Path
    boxes: np.ndarray  # (N, 4) xyxy in original pixels
    labels: np.ndarray  # (N,) contiguous class indices
    size: tuple[int, int] = field(default=(0, 0))  # (height, width) from the annotation file



def _check_coco_records(coco: dict[str, Any], annotation_file: Path) -> None:
    """Every category, image and annotation has the fields (and types) COCO detection needs."""
    def fail(kind: str, index: int, message: str) -> None:
        raise DataFileError(f"{annotation_file}, {kind}[{index}]: {message}")

    for index, category in enumerate(coco["categories"]):
        if not isinstance(category, dict) or not isinstance(category.get("id"), int) or "name" not in category:
            fail("categories", index, "needs an integer 'id' and a 'name'")
    category_ids = {category["id"] for category in coco["categories"]}
    image_ids = set()
    for index, image in enumerate(coco["images"]):
        if not isinstance(image, dict) or not isinstance(image.get("id"), int) or not isinstance(
                image.get("file_name"), str):
            fail("images", index, "needs an integer 'id' and a string 'file_name'")
        image_ids.add(image["id"])
    for index, ann in enumerate(coco["annotations"]):
        if not isinstance(ann, dict):
            fail("annotations", index, f"must be an object, got {type(ann).__name__}")
        for name in ("image_id", "category_id", "bbox"):
            if name not in ann:
                fail("annotations", index, f"missing field {name!r} (id={ann.get('id')!r})")
        bbox = ann["bbox"]
        if (not isinstance(bbox, list) or len(bbox) != 4
                or not all(is_number(v) and math.isfinite(v) for v in bbox)):
            fail("annotations", index, f"field 'bbox' must be 4 finite numbers [x, y, width, height], got {bbox!r}")
        if bbox[2] < 0 or bbox[3] < 0:
            fail("annotations", index, f"field 'bbox' has a negative width or height: {bbox!r}")
        if ann["image_id"] not in image_ids:
            fail("annotations", index, f"field 'image_id' {ann['image_id']!r} is not an id in 'images'")
        if ann["category_id"] not in category_ids:
            fail("annotations", index, f"field 'category_id' {ann['category_id']!r} is not an id in 'categories'")

class CocoDetectionDataset(Dataset[dict[str, Any]]):
    """A COCO-format detection split: images resized to ``image_size``, boxes scaled with them.

    Args:
        annotation_file: COCO JSON (``images``, ``annotations``, ``categories``).
        image_root: Folder the images' ``file_name`` entries are relative to.
        class_names: Categories to keep, in label order; ``None`` keeps all, ordered by id.
            Annotations of other categories and crowd regions are dropped; images are kept
            (background images are valid training data).
        image_size: ``(height, width)`` every image is resized to; ``None`` keeps the sizes
            (then batches need equal sizes).
        color: ``"gray"`` (one channel) or ``"rgb"``.
        hflip: Random horizontal flips (training).
        min_box_size: Boxes narrower or shorter than this (pixels, after resizing) are dropped.

    Raises:
        FileNotFoundError: If the annotation file or the image root is missing.
        ValueError: If the file is not COCO detection format or a class name is unknown.
    """

    def __init__(
        self,
        annotation_file: str | os.PathLike[str],
        image_root: str | os.PathLike[str],
        class_names: Sequence[str] | None = None,
        image_size: tuple[int, int] | None = None,
        color: Literal["gray", "rgb"] = "gray",
        hflip: bool = False,
        min_box_size: float = 1.0,
    ) -> None:
        annotation_file, image_root = Path(annotation_file), Path(image_root)
        if not annotation_file.is_file():
            raise FileNotFoundError(f"annotation file {annotation_file} does not exist")
        if not image_root.is_dir():
            raise FileNotFoundError(f"image root {image_root} is not a folder")
        if color not in ("gray", "rgb"):
            raise ValueError(f"color must be 'gray' or 'rgb', got {color!r}")
        try:
            coco = json.loads(annotation_file.read_text())
        except ValueError as error:
            raise ValueError(f"{annotation_file} is not valid JSON: {error}") from None
        if not isinstance(coco, dict) or not all(isinstance(coco.get(k), list) for k in ("images", "annotations", "categories")):
            raise ValueError(
                f"{annotation_file} is not a COCO detection file: expected a JSON object with lists "
                "'images', 'annotations' and 'categories'"
            )
        _check_coco_records(coco, annotation_file)
        categories = sorted(coco["categories"], key=lambda c: c["id"])
        by_name = {c["name"]: c["id"] for c in categories}
        if class_names is None:
            class_names = [c["name"] for c in categories]
        unknown = [n for n in class_names if n not in by_name]
        if unknown:
            raise ValueError(f"class_names {unknown} are not categories of {annotation_file} (it has {sorted(by_name)})")
        self.class_names = list(class_names)
        label_of = {by_name[n]: i for i, n in enumerate(self.class_names)}
        self.image_size = image_size
        self.color = color
        self.hflip = hflip
        self.min_box_size = float(min_box_size)
        boxes: dict[int, list[list[float]]] = {}
        labels: dict[int, list[int]] = {}
        for ann in coco["annotations"]:
            if ann.get("iscrowd", 0) or ann["category_id"] not in label_of:
                continue
            x, y, w, h = (float(v) for v in ann["bbox"])
            boxes.setdefault(ann["image_id"], []).append([x, y, x + w, y + h])
            labels.setdefault(ann["image_id"], []).append(label_of[ann["category_id"]])
        self.records = [
            _Record(
                image_id=int(img["id"]),
                path=image_root / img["file_name"],
                boxes=np.asarray(boxes.get(img["id"], []), dtype=np.float32).reshape(-1, 4),
                labels=np.asarray(labels.get(img["id"], []), dtype=np.int64),
                size=(int(img.get("height", 0)), int(img.get("width", 0))),
            )
            for img in sorted(coco["images"], key=lambda i: i["id"])
        ]
        if not self.records:
            raise DataFileError(f"{annotation_file} lists no images")
        missing = [r.path for r in self.records if not r.path.is_file()]
        if missing:
            raise MissingFileError(f"{annotation_file} names {len(missing)} image(s) missing under image_root "
                                   f"{image_root}, e.g. {missing[0]}")

    def __len__(self) -> int:
        return len(self.records)

    def load_image(self, index: int) -> Tensor:
        """The image as a ``(C, H, W)`` float tensor in [0, 1] at its original size."""
        record = self.records[index]
        try:
            with Image.open(record.path) as image:
                array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        except (OSError, FileNotFoundError) as error:
            raise FileNotFoundError(f"cannot read image {record.path}: {error}") from None
        rgb = torch.from_numpy(array).permute(2, 0, 1)
        return to_gray(rgb)[None].clamp_(0.0, 1.0) if self.color == "gray" else rgb

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        image = self.load_image(index)
        boxes = torch.from_numpy(record.boxes.copy())
        height, width = image.shape[-2:]
        if self.image_size is not None and (height, width) != tuple(self.image_size):
            new_h, new_w = self.image_size
            image = F.interpolate(image[None], size=(new_h, new_w), mode="bilinear", align_corners=False,
                                  antialias=True)[0].clamp_(0.0, 1.0)
            boxes = boxes * torch.tensor([new_w / width, new_h / height, new_w / width, new_h / height])
            height, width = new_h, new_w
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
        keep = ((boxes[:, 2] - boxes[:, 0]) >= self.min_box_size) & ((boxes[:, 3] - boxes[:, 1]) >= self.min_box_size)
        boxes, labels = boxes[keep], torch.from_numpy(record.labels)[keep]
        if self.hflip and torch.rand(()) < 0.5:
            image = image.flip(-1)
            boxes = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)
        return {"image": image, "boxes": boxes, "labels": labels, "image_id": record.image_id}

    def iter_gray(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """``(gray (H, W), boxes, labels)`` of every image at its original size, no augmentation."""
        for index, record in enumerate(self.records):
            image = self.load_image(index)
            yield to_gray(image), torch.from_numpy(record.boxes), torch.from_numpy(record.labels)


def collate_detection(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stacks images (equal sizes required) and keeps per-image boxes/labels as lists."""
    sizes = {tuple(s["image"].shape) for s in samples}
    if len(sizes) != 1:
        raise ValueError(f"images in a batch must have one size, got {sorted(sizes)}; set image_size")
    return {
        "images": torch.stack([s["image"] for s in samples]),
        "boxes": [s["boxes"] for s in samples],
        "labels": [s["labels"] for s in samples],
        "image_ids": torch.tensor([s["image_id"] for s in samples], dtype=torch.int64),
    }


class InfraredDetectionDataModule(LightningDataModule):
    """COCO-format infrared detection splits (FLIR ADAS, LLVIP / M3FD converted to COCO).

    Paths are relative to ``data_dir`` unless absolute. Each split's images are found relative
    to ``<split>_images``, which defaults to the annotation file's folder (FLIR ADAS v2 layout:
    ``images_thermal_train/coco.json`` with ``file_name: data/<name>.jpg``).

    Args:
        data_dir: Dataset root.
        train_annotations: Training split's COCO JSON.
        val_annotations: Validation split's COCO JSON.
        test_annotations: Test split's COCO JSON; ``None`` reuses validation.
        train_images: Image root of the training split.
        val_images: Image root of the validation split.
        test_images: Image root of the test split.
        class_names: Categories to keep, in label order (FLIR: ``[person, bike, car]``);
            ``None`` keeps all categories ordered by id.
        image_size: ``[height, width]`` every image is resized to (batches need one size).
        color: ``"gray"`` (one channel, default: IR is single-band) or ``"rgb"``.
        hflip: Random horizontal flips of training images.
        min_box_size: Boxes smaller than this many pixels (after resizing) are dropped.
        batch_size: Training batch size.
        eval_batch_size: Validation/test batch size; ``None`` uses ``batch_size``.
        num_workers: DataLoader workers.
    """

    def __init__(
        self,
        data_dir: str = "data/flir",
        train_annotations: str = "images_thermal_train/coco.json",
        val_annotations: str = "images_thermal_val/coco.json",
        test_annotations: str | None = None,
        train_images: str | None = None,
        val_images: str | None = None,
        test_images: str | None = None,
        class_names: list[str] | None = None,
        image_size: int | list[int] = 512,
        color: Literal["gray", "rgb"] = "gray",
        hflip: bool = True,
        min_box_size: float = 2.0,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.data_dir = data_dir
        self.annotations = {"train": train_annotations, "val": val_annotations, "test": test_annotations}
        self.image_roots = {"train": train_images, "val": val_images, "test": test_images}
        if class_names is not None and (isinstance(class_names, str) or not all(isinstance(n, str) for n in class_names)):
            raise ValueError(f"class_names must be a list of category names, got {class_names!r}")
        self._class_names = list(class_names) if class_names is not None else None
        self.image_size = _check_image_size(image_size)
        if color not in ("gray", "rgb"):
            raise ValueError(f"color must be 'gray' or 'rgb', got {color!r}")
        self.color = color
        self.hflip = bool(hflip)
        self.min_box_size = check_number("min_box_size", min_box_size, 0.0, finite=False)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.eval_batch_size = check_optional_positive_int("eval_batch_size", eval_batch_size) or self.batch_size
        self.num_workers = check_non_negative_int("num_workers", num_workers)
        self.datasets: dict[str, CocoDetectionDataset] = {}

    def _resolve(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else Path(self.data_dir) / p

    @override
    def prepare_data(self) -> None:
        """Nothing to download: the dataset must already be on disk (see the KGAT README)."""

    def _dataset(self, split: str) -> CocoDetectionDataset:
        if split not in self.datasets:
            annotations = self.annotations[split] if self.annotations[split] is not None else self.annotations["val"]
            images = self.image_roots[split] if self.annotations[split] is not None else self.image_roots["val"]
            annotation_file = self._resolve(annotations)
            image_root = self._resolve(images) if images is not None else annotation_file.parent
            self.datasets[split] = CocoDetectionDataset(
                annotation_file, image_root, class_names=self._class_names, image_size=self.image_size,
                color=self.color, hflip=self.hflip and split == "train", min_box_size=self.min_box_size,
            )
        return self.datasets[split]

    @override
    def setup(self, stage: str | None = None) -> None:
        splits = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
        for split in splits.get(stage or "", ("train", "val", "test")):
            self._dataset(split)

    @property
    def class_names(self) -> list[str]:
        """Label order of the boxes (read from the training annotations)."""
        return self._dataset("train").class_names

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_channels(self) -> int:
        return 1 if self.color == "gray" else 3

    def iter_train_gray(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """``(gray (H, W), boxes, labels)`` of every training image, unaugmented.

        What KGAT's relation-stability matrix R is computed from
        (:func:`~robust_lightning.lightning_modules.kgat.knowledge.relation_stability_matrix`);
        the statistic itself belongs to the method, the images to the data.
        """
        return self._dataset("train").iter_gray()

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader[dict[str, Any]]:
        dataset = self._dataset(split)
        return DataLoader(
            dataset, batch_size=batch_size, sampler=EpochShuffleSampler(dataset) if shuffle else None,
            collate_fn=collate_detection, num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
        )

    @override
    def train_dataloader(self) -> DataLoader[dict[str, Any]]:
        return self._loader("train", self.batch_size, shuffle=True)

    @override
    def val_dataloader(self) -> DataLoader[dict[str, Any]]:
        return self._loader("val", self.eval_batch_size, shuffle=False)

    @override
    def test_dataloader(self) -> DataLoader[dict[str, Any]]:
        return self._loader("test", self.eval_batch_size, shuffle=False)

    @override
    def predict_dataloader(self) -> DataLoader[dict[str, Any]]:
        return self._loader("test", self.eval_batch_size, shuffle=False)


class SyntheticThermalDataModule(InfraredDetectionDataModule):
    """Synthetic thermal scenes (:func:`generate_thermal_scenes`) through the COCO loader.

    The dataset is generated into ``data_dir`` on first use (``prepare_data``) and reused while
    its parameters do not change.

    Args:
        data_dir: Where the generated dataset lives.
        n_train: Training images.
        n_val: Validation images.
        n_test: Test images.
        image_size: Image height and width.
        objects_per_image: ``[min, max]`` objects per image.
        noise_std: Temporal sensor noise (gray levels in [0, 1]).
        seed: Generator seed.
        hflip: Random horizontal flips of training images.
        batch_size: Training batch size.
        eval_batch_size: Validation/test batch size.
        num_workers: DataLoader workers.
    """

    def __init__(
        self,
        data_dir: str = "data/thermal_scenes",
        n_train: int = 400,
        n_val: int = 100,
        n_test: int = 100,
        image_size: int = 96,
        objects_per_image: list[int] = [1, 4],  # noqa: B006 - jsonargparse shows the default
        noise_std: float = 0.02,
        seed: int = 0,
        hflip: bool = True,
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__(
            data_dir=data_dir, train_annotations="annotations/train.json", val_annotations="annotations/val.json",
            test_annotations="annotations/test.json", train_images="images/train", val_images="images/val",
            test_images="images/test", class_names=[c.name for c in THERMAL_CLASSES], image_size=image_size,
            color="gray", hflip=hflip, min_box_size=1.0, batch_size=batch_size, eval_batch_size=eval_batch_size,
            num_workers=num_workers,
        )
        self.generator_args = {
            "n_train": n_train, "n_val": n_val, "n_test": n_test, "image_size": image_size,
            "objects_per_image": list(objects_per_image), "noise_std": noise_std, "seed": seed,
        }
        # Validate now (clear errors at construction), generate later.
        check_positive_int("n_train", n_train)
        check_positive_int("n_val", n_val)
        check_positive_int("n_test", n_test)

    @override
    def prepare_data(self) -> None:
        generate_thermal_scenes(self.data_dir, **self.generator_args)

    @override
    def setup(self, stage: str | None = None) -> None:
        # Generation is atomic and idempotent, so a direct setup() (or another rank) is safe.
        self.prepare_data()
        super().setup(stage)



def voc_to_coco(
    annotation_dir: str | os.PathLike[str],
    image_dir: str | os.PathLike[str],
    out_file: str | os.PathLike[str],
    class_names: Sequence[str] | None = None,
    stems: Sequence[str] | None = None,
    image_suffixes: Sequence[str] = (".jpg", ".jpeg", ".png", ".bmp"),
) -> Path:
    """Converts Pascal VOC XML annotations (LLVIP, M3FD) to one COCO detection file.

    Args:
        annotation_dir: Folder of ``<stem>.xml`` files.
        image_dir: Folder of the images; ``file_name`` entries are relative to it.
        out_file: COCO JSON to write (never overwritten).
        class_names: Categories in id order; ``None`` takes every name found, sorted.
        stems: Which files make this split (e.g. LLVIP's ``infrared/train`` listing, or a seeded
            split of M3FD); ``None`` converts every XML file whose image exists in ``image_dir``.
        image_suffixes: Image extensions tried for each stem.

    Returns:
        ``Path(out_file)``.

    Raises:
        FileExistsError: If ``out_file`` exists.
        ValueError: On malformed XML or a class outside ``class_names``.
    """
    annotation_dir, image_dir, out_file = Path(annotation_dir), Path(image_dir), Path(out_file)
    if out_file.exists():
        raise FileExistsError(f"out_file {out_file} exists; refusing to overwrite it")
    if not annotation_dir.is_dir() or not image_dir.is_dir():
        raise FileNotFoundError(f"annotation_dir {annotation_dir} and image_dir {image_dir} must be folders")
    if stems is None:
        stems = sorted(p.stem for p in annotation_dir.glob("*.xml"))
    parsed = []
    for stem in stems:
        image = next((image_dir / f"{stem}{suffix}" for suffix in image_suffixes
                      if (image_dir / f"{stem}{suffix}").is_file()), None)
        if image is None:
            continue
        try:
            # ElementTree resolves no external entities; expat >= 2.4.1 caps entity expansion.
            root = ET.parse(annotation_dir / f"{stem}.xml").getroot()
        except (ET.ParseError, OSError) as error:
            raise ValueError(f"cannot parse {annotation_dir / (stem + '.xml')}: {error}") from None
        size = root.find("size")
        width = int(float(size.findtext("width", "0"))) if size is not None else 0
        height = int(float(size.findtext("height", "0"))) if size is not None else 0
        if width <= 0 or height <= 0:
            with Image.open(image) as opened:
                width, height = opened.size
        objects = []
        for obj in root.iter("object"):
            box = obj.find("bndbox")
            name = (obj.findtext("name") or "").strip()
            if box is None or not name:
                raise ValueError(f"{stem}.xml: every <object> needs a <name> and a <bndbox>")
            x1, y1, x2, y2 = (float(box.findtext(k, "nan")) for k in ("xmin", "ymin", "xmax", "ymax"))
            objects.append((name, x1, y1, x2, y2))
        parsed.append((image.name, width, height, objects))
    names = list(class_names) if class_names is not None else sorted({o[0] for _, _, _, objs in parsed for o in objs})
    category = {name: i + 1 for i, name in enumerate(names)}
    images, annotations = [], []
    for image_id, (file_name, width, height, objects) in enumerate(parsed, start=1):
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        for name, x1, y1, x2, y2 in objects:
            if name not in category:
                raise ValueError(f"{file_name}: class {name!r} is not in class_names {names}")
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category[name],
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(json.dumps({"images": images, "annotations": annotations,
                                    "categories": [{"id": i, "name": n} for n, i in category.items()]}))
    return out_file
