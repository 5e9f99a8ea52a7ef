"""COCO-format infrared loader and the synthetic thermal-scene generator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from robust_lightning.datamodules.infrared import (
    THERMAL_CLASSES,
    CocoDetectionDataset,
    InfraredDetectionDataModule,
    SyntheticThermalDataModule,
    generate_thermal_scenes,
)
from robust_lightning.lightning_modules.kgat.knowledge import (
    background_gray_mean,
    class_gray_means,
)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_thermal_scenes(tmp_path_factory.mktemp("thermal") / "scenes", n_train=40, n_val=8, n_test=8,
                                   image_size=64, seed=3)


def test_generation_is_deterministic_and_reused(scenes: Path, tmp_path: Path) -> None:
    again = generate_thermal_scenes(tmp_path / "again", n_train=40, n_val=8, n_test=8, image_size=64, seed=3)
    for name in ("annotations/train.json", "images/train/000007.png", "images/test/000002.png"):
        assert (scenes / name).read_bytes() == (again / name).read_bytes(), name
    stamp = (again / "manifest.json").stat().st_mtime_ns
    generate_thermal_scenes(again, n_train=40, n_val=8, n_test=8, image_size=64, seed=3)
    assert (again / "manifest.json").stat().st_mtime_ns == stamp, "same parameters must reuse the dataset"
    other = generate_thermal_scenes(again, n_train=40, n_val=8, n_test=8, image_size=64, seed=4)
    assert (other / "annotations/train.json").read_bytes() != (scenes / "annotations/train.json").read_bytes()


def test_generation_never_touches_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "precious.txt").write_text("user data")
    with pytest.raises(ValueError, match="not a generated dataset"):
        generate_thermal_scenes(tmp_path / "mine", n_train=2, n_val=1, n_test=1, image_size=32)
    assert (tmp_path / "mine" / "precious.txt").read_text() == "user data"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"n_train": 0}, "n_train"), ({"image_size": 16}, "image_size"),
     ({"objects_per_image": [3, 1]}, r"objects_per_image must satisfy 1 <= min <= max, got \[3, 1\]"),
     ({"objects_per_image": 2}, r"objects_per_image must be a pair \(min, max\) of ints, got 2"),
     ({"noise_std": -1.0}, r"noise_std must be a finite number >= 0 and < 0.5, got -1.0"),
     ({"image_size": "big"}, r"image_size must be a positive int or \[height, width\], got 'big'")],
)
def test_generation_rejects_bad_arguments(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        generate_thermal_scenes(tmp_path / "x", **kwargs)


def test_class_gray_order_holds_in_every_image(scenes: Path) -> None:
    dataset = CocoDetectionDataset(scenes / "annotations" / "train.json", scenes / "images" / "train")
    assert dataset.class_names == [c.name for c in THERMAL_CLASSES]
    order = {"car": 3, "person": 2, "background": 1, "bicycle": 0}
    pairs = 0
    for gray, boxes, labels in dataset.iter_gray():
        means = class_gray_means(gray, boxes, labels, 3)
        levels = {dataset.class_names[k]: float(means[k]) for k in labels.unique().tolist()}
        levels["background"] = float(background_gray_mean(gray, boxes))
        ranked = sorted(levels, key=levels.__getitem__)
        assert ranked == sorted(levels, key=order.__getitem__), levels
        pairs += len(levels) > 2
    assert pairs > 10, "most images should hold more than one class"


def test_loader_reads_boxes_resizes_and_converts_to_gray(scenes: Path) -> None:
    raw = json.loads((scenes / "annotations" / "val.json").read_text())
    first = raw["images"][0]
    anns = [a for a in raw["annotations"] if a["image_id"] == first["id"]]
    dataset = CocoDetectionDataset(scenes / "annotations" / "val.json", scenes / "images" / "val", image_size=(32, 128))
    item = dataset[0]
    assert item["image"].shape == (1, 32, 128) and 0 <= item["image"].min() and item["image"].max() <= 1
    x, y, w, h = anns[0]["bbox"]
    expected = torch.tensor([x * 2, y / 2, (x + w) * 2, (y + h) / 2])
    assert torch.allclose(item["boxes"][0], expected)
    assert item["labels"][0] == anns[0]["category_id"] - 1
    rgb = CocoDetectionDataset(scenes / "annotations" / "val.json", scenes / "images" / "val", color="rgb")[0]["image"]
    assert rgb.shape[0] == 3 and torch.allclose(rgb[0], rgb[1])


def test_hflip_moves_boxes_with_the_image(scenes: Path) -> None:
    dataset = CocoDetectionDataset(scenes / "annotations" / "train.json", scenes / "images" / "train", hflip=True)
    plain = CocoDetectionDataset(scenes / "annotations" / "train.json", scenes / "images" / "train")
    torch.manual_seed(0)
    flipped_any = False
    for _ in range(8):
        item, ref = dataset[1], plain[1]
        if not torch.equal(item["image"], ref["image"]):
            flipped_any = True
            assert torch.equal(item["image"], ref["image"].flip(-1))
            width = ref["image"].shape[-1]
            assert torch.allclose(item["boxes"][:, 0], width - ref["boxes"][:, 2])
    assert flipped_any


def _write_coco(root: Path, categories: list[dict], annotations: list[dict]) -> Path:
    (root / "data").mkdir(parents=True)
    Image.fromarray(np.full((20, 30, 3), 128, dtype=np.uint8)).save(root / "data" / "a.jpg")
    (root / "coco.json").write_text(json.dumps({
        "images": [{"id": 7, "file_name": "data/a.jpg", "width": 30, "height": 20}],
        "annotations": annotations, "categories": categories,
    }))
    return root / "coco.json"


def test_flir_layout_class_subset_and_crowd_regions(tmp_path: Path) -> None:
    categories = [{"id": 1, "name": "person"}, {"id": 2, "name": "bike"}, {"id": 3, "name": "car"}, {"id": 79, "name": "dog"}]
    annotations = [
        {"id": 1, "image_id": 7, "category_id": 3, "bbox": [1, 1, 5, 5], "iscrowd": 0},
        {"id": 2, "image_id": 7, "category_id": 79, "bbox": [2, 2, 5, 5], "iscrowd": 0},
        {"id": 3, "image_id": 7, "category_id": 1, "bbox": [10, 2, 5, 5], "iscrowd": 1},
        {"id": 4, "image_id": 7, "category_id": 1, "bbox": [10, 2, 6, 9], "iscrowd": 0},
    ]
    _write_coco(tmp_path / "images_thermal_train", categories, annotations)
    dm = InfraredDetectionDataModule(data_dir=str(tmp_path), train_annotations="images_thermal_train/coco.json",
                                     val_annotations="images_thermal_train/coco.json", class_names=["person", "bike", "car"],
                                     image_size=[20, 30], batch_size=1)
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    assert dm.num_classes == 3 and dm.in_channels == 1
    assert batch["labels"][0].tolist() == [2, 0]  # the dog and the crowd region are gone
    assert batch["image_ids"].tolist() == [7]
    assert float(batch["images"][0].mean()) == pytest.approx(128 / 255, abs=1e-3)


def test_loader_errors_name_the_problem(tmp_path: Path) -> None:
    annotation = _write_coco(tmp_path / "split", [{"id": 1, "name": "person"}], [])
    with pytest.raises(ValueError, match=r"class_names \['car'\]"):
        CocoDetectionDataset(annotation, tmp_path / "split", class_names=["car"])
    with pytest.raises(FileNotFoundError, match="annotation file"):
        CocoDetectionDataset(tmp_path / "missing.json", tmp_path / "split")
    (tmp_path / "bad.json").write_text(json.dumps({"images": {}}))
    with pytest.raises(ValueError, match="not a COCO detection file"):
        CocoDetectionDataset(tmp_path / "bad.json", tmp_path / "split")
    dataset = CocoDetectionDataset(annotation, tmp_path / "split")
    (tmp_path / "split" / "data" / "a.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="cannot read image"):
        dataset[0]  # deleted after setup: reported when read
    with pytest.raises(FileNotFoundError, match=r"missing under image_root .*a\.jpg"):
        CocoDetectionDataset(annotation, tmp_path / "split")  # missing at setup: reported at setup
    with pytest.raises(ValueError, match=r"image_size must be a positive int or \[height, width\], got \[0, 3\]"):
        InfraredDetectionDataModule(image_size=[0, 3])
    with pytest.raises(ValueError, match="color"):
        InfraredDetectionDataModule(color="thermal")


def test_synthetic_datamodule_batches_and_training_images_for_the_relation_matrix(tmp_path: Path) -> None:
    dm = SyntheticThermalDataModule(data_dir=str(tmp_path / "s"), n_train=24, n_val=4, n_test=4, image_size=48, batch_size=8)
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["images"].shape == (8, 1, 48, 48) and len(batch["boxes"]) == 8
    assert all(b.shape[1] == 4 and (b[:, 2:] > b[:, :2]).all() for b in batch["boxes"])
    from robust_lightning.lightning_modules.kgat.knowledge import relation_stability_matrix

    relation = relation_stability_matrix(dm.iter_train_gray(), dm.num_classes)
    assert relation.shape == (3, 3) and float(relation[1, 0]) == 1.0 and float(relation[0, 2]) == 1.0


def test_voc_to_coco_converts_llvip_style_annotations(tmp_path: Path) -> None:
    from robust_lightning.datamodules.infrared import voc_to_coco

    (tmp_path / "Annotations").mkdir()
    (tmp_path / "infrared").mkdir()
    for stem, boxes in (("010001", [(10, 20, 30, 60)]), ("010002", [(1, 2, 11, 12), (40, 5, 50, 25)]), ("999999", [])):
        objects = "".join(
            f"<object><name>person</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax><ymax>{d}</ymax>"
            "</bndbox></object>" for a, b, c, d in boxes)
        (tmp_path / "Annotations" / f"{stem}.xml").write_text(
            f"<annotation><size><width>64</width><height>48</height></size>{objects}</annotation>")
        if stem != "999999":  # no image: skipped
            Image.fromarray(np.zeros((48, 64, 3), dtype=np.uint8)).save(tmp_path / "infrared" / f"{stem}.jpg")
    out = voc_to_coco(tmp_path / "Annotations", tmp_path / "infrared", tmp_path / "train.json")
    dataset = CocoDetectionDataset(out, tmp_path / "infrared")
    assert dataset.class_names == ["person"] and len(dataset) == 2
    assert dataset[1]["boxes"].tolist() == [[1.0, 2.0, 11.0, 12.0], [40.0, 5.0, 50.0, 25.0]]
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        voc_to_coco(tmp_path / "Annotations", tmp_path / "infrared", out)
    with pytest.raises(ValueError, match="not in class_names"):
        voc_to_coco(tmp_path / "Annotations", tmp_path / "infrared", tmp_path / "x.json", class_names=["car"])
