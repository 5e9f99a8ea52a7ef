"""KGAT configs: tiny generated thermal scenes, and FLIR-layout COCO files made from them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from robust_lightning.datamodules.infrared import generate_thermal_scenes


def _synthetic(tmp_path: Path) -> list[str]:
    return [f"--data.init_args.data_dir={tmp_path / 'scenes'}", "--data.init_args.n_train=8",
            "--data.init_args.n_val=4", "--data.init_args.n_test=4", "--data.init_args.image_size=64",
            "--data.init_args.batch_size=4"]


def write_flir_layout(root: Path) -> Path:
    """FLIR ADAS v2 layout (``images_thermal_{train,val}/coco.json`` + ``data/``), FLIR category
    names and ids, from a few generated scenes saved as 3-channel JPEGs."""
    from PIL import Image

    scenes = generate_thermal_scenes(root / "_scenes", n_train=6, n_val=3, n_test=1, image_size=64)
    flir_ids = {"person": 1, "bicycle": 2, "car": 3}
    flir_names = {"person": "person", "bicycle": "bike", "car": "car"}
    for split, source in (("train", "train"), ("val", "val")):
        coco = json.loads((scenes / "annotations" / f"{source}.json").read_text())
        names = {c["id"]: c["name"] for c in coco["categories"]}
        out = root / f"images_thermal_{split}"
        (out / "data").mkdir(parents=True)
        for image in coco["images"]:
            Image.open(scenes / "images" / source / image["file_name"]).convert("RGB").save(
                out / "data" / image["file_name"].replace(".png", ".jpg"))
            image["file_name"] = "data/" + image["file_name"].replace(".png", ".jpg")
        for ann in coco["annotations"]:
            ann["category_id"] = flir_ids[names[ann["category_id"]]]
        coco["categories"] = [{"id": i, "name": flir_names[n]} for n, i in flir_ids.items()] + [{"id": 79, "name": "dog"}]
        (out / "coco.json").write_text(json.dumps(coco))
    shutil.rmtree(root / "_scenes")
    return root


def _flir(tmp_path: Path) -> list[str]:
    root = write_flir_layout(tmp_path / "flir")
    return [f"--data.init_args.data_dir={root}", "--data.init_args.image_size=64", "--data.init_args.batch_size=2"]


OVERRIDES = {"SyntheticThermalDataModule": _synthetic, "InfraredDetectionDataModule": _flir}


def _needs_mmdet(workdir: Path) -> None:
    import pytest

    pytest.importorskip("mmdet", reason="KGAT configs need the mmdet stack (make install builds it)")


EXTRA_SETUP = {
    str(path.relative_to(Path(__file__).resolve().parents[3] / "configs")): _needs_mmdet
    for path in (Path(__file__).resolve().parents[3] / "configs" / "kgat").glob("*.yaml")
}
