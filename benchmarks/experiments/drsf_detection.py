"""DRSF detection vs plain training on style-shifted synthetic thermal scenes (README table).

One call trains one variant of a small FCOS (the KGAT benchmark's detector: mmdet's FCOS config
with a 1/4-width ResNet-18-style backbone, from scratch) on the source-style scenes of
:class:`~robust_lightning.datamodules.thermal_styles.SyntheticThermalStylesDataModule` (DRSF
variants also see the unlabelled pseudo-domain views) and reports mAP50 on the test split in
the held-out style and in the source style. Used by ``benchmarks/drsf_detection.py`` and the
effect test.
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from benchmarks.experiments.kgat import TINY_FCOS
from robust_lightning.datamodules.thermal_styles import SyntheticThermalStylesDataModule

__all__ = ["EXPERIMENT_DEFAULTS", "VARIANTS", "run_drsf_detection"]

# Each ablation removes one component of the released recipe from the full DRSF.
VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {"method": "plain"},
    "drsf": {},
    "no_image_grl": {"image_grl_weight": 0.0},
    "no_instance_grl": {"instance_grl_weight": 0.0},
    "no_consistency": {"consistency_weight": 0.0},
    "no_pseudo_labels": {"pseudo_labels": False},
    "drsf_reassembly": {"reassembly": True},
    "drsf_soft_fusion": {"fusion_weight": 0.1},
}

EXPERIMENT_DEFAULTS: dict[str, Any] = {
    "n_train": 160, "n_test": 100, "image_size": 64, "batch_size": 8, "epochs": 6, "lr": 2e-3,
    "n_pseudo_domains": 3, "image_head_hidden": 64, "instance_head_hidden": 128, "instances_per_image": 32,
    "pseudo_label_threshold": 0.5, "mask_block_size": 8, "mask_ratio": 0.5, "teacher_alpha": 0.9,
}


def run_drsf_detection(root: str | Path, variant: str, seed: int = 0, **settings: Any) -> dict[str, float]:
    """Trains ``variant`` (a key of :data:`VARIANTS`) and evaluates it on the test split.

    Args:
        root: Folder under which the scenes of each seed are generated (and reused).
        variant: ``plain``, ``drsf`` or an ablation.
        seed: Seed of the scenes, of the pseudo-domain styles, of the initialisation and data order.
        **settings: Overrides of :data:`EXPERIMENT_DEFAULTS`.

    Returns:
        ``{"map50_held_out", "map50_95_held_out", "map50_source", "pseudo_labelled_fraction"
        (of the pseudo-target images that got >= 1 teacher box), "seconds", "threads"}``.
    """
    from robust_lightning.lightning_modules.drsf.detection_lightning_module import (
        DRSFDetector,
    )

    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; known: {sorted(VARIANTS)}")
    unknown = set(settings) - set(EXPERIMENT_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown settings {sorted(unknown)}; known: {sorted(EXPERIMENT_DEFAULTS)}")
    s = {**EXPERIMENT_DEFAULTS, **settings}
    pl.seed_everything(seed, workers=True, verbose=False)

    def datamodule(test_style: str) -> SyntheticThermalStylesDataModule:
        return SyntheticThermalStylesDataModule(
            data_dir=str(Path(root) / f"scenes_seed{seed}"), n_train=s["n_train"], n_val=s["n_test"],
            n_test=s["n_test"], image_size=s["image_size"], batch_size=s["batch_size"], seed=seed,
            n_pseudo_domains=s["n_pseudo_domains"], style_seed=seed, test_style=test_style)

    options = {"method": "drsf", **VARIANTS[variant]}
    module = DRSFDetector(
        num_classes=3, image_head_hidden=s["image_head_hidden"], instance_head_hidden=s["instance_head_hidden"],
        instances_per_image=s["instances_per_image"], pseudo_label_threshold=s["pseudo_label_threshold"],
        mask_block_size=s["mask_block_size"], mask_ratio=s["mask_ratio"], teacher_alpha=s["teacher_alpha"],
        seed=seed, optimizer=lambda params: torch.optim.AdamW(params, lr=s["lr"], weight_decay=1e-4),
        **options, **TINY_FCOS,
    )
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = pl.Trainer(max_epochs=s["epochs"], accelerator="cpu", devices=1, logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                             gradient_clip_val=10.0, limit_val_batches=0, default_root_dir=tmp)
        trainer.fit(module, datamodule=datamodule("held_out"))
        seconds = time.perf_counter() - start
        labelled, offered = module.pseudo_label_counts
        pseudo = labelled / offered if offered else float("nan")
        held_out = trainer.test(module, datamodule=datamodule("held_out"), verbose=False)[0]
        source = trainer.test(module, datamodule=datamodule("source"), verbose=False)[0]
    return {"map50_held_out": float(held_out["test/map50"]), "map50_95_held_out": float(held_out["test/map50_95"]),
            "map50_source": float(source["test/map50"]), "pseudo_labelled_fraction": pseudo,
            "seconds": round(seconds, 1), "threads": int(os.environ.get("OMP_NUM_THREADS", "0") or 0)}
