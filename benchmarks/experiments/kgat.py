"""Plain vs adversarial vs KGAT training on synthetic thermal scenes, same budget (README table).

One call trains one recipe of a small FCOS (mmdet's FCOS config with a 1/4-width ResNet-18-style
backbone, from scratch) on :func:`~robust_lightning.datamodules.generate_thermal_scenes` data and
reports test mAP50 / mAP50:95, clean and under the evaluation attacks. Used by
``benchmarks/kgat_synthetic.py`` and the effect test.
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

from robust_lightning.attacks.detection import DetectionAttack
from robust_lightning.datamodules.infrared import SyntheticThermalDataModule

__all__ = ["EXPERIMENT_DEFAULTS", "TINY_FCOS", "run_synthetic_experiment"]

TINY_FCOS: dict[str, Any] = {
    "detector": "mmdet::fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py",
    "detector_overrides": {
        "backbone.depth": 18, "backbone.base_channels": 16, "backbone.style": "pytorch", "backbone.frozen_stages": -1,
        "backbone.norm_cfg": {"type": "BN", "requires_grad": True}, "backbone.norm_eval": False,
        "neck.in_channels": [16, 32, 64, 128], "neck.out_channels": 64,
        "bbox_head.in_channels": 64, "bbox_head.feat_channels": 64, "bbox_head.stacked_convs": 2,
        "bbox_head.norm_cfg": {"type": "GN", "num_groups": 16},
        "data_preprocessor.mean": [127.5, 127.5, 127.5], "data_preprocessor.std": [63.75, 63.75, 63.75],
    },
}

EXPERIMENT_DEFAULTS: dict[str, Any] = {
    "n_train": 400, "n_test": 100, "image_size": 64, "batch_size": 8, "epochs": 10, "lr": 2e-3,
    "train_eps": "8/255", "adversarial_images": 4, "eval_eps": "4/255", "eval_pgd_steps": 5,
}


def run_synthetic_experiment(root: str | Path, recipe: str, seed: int = 0, data_seed: int = 0,
                             **settings: Any) -> dict[str, float]:
    """Trains ``recipe`` (``plain``/``adversarial``/``kgat``) and evaluates it on the test split.

    Args:
        root: Folder of the generated scenes (reused across calls with the same data settings).
        recipe: Training recipe of :class:`~robust_lightning.lightning_modules.kgat.KGATDetector`.
        seed: Seed of the model initialisation, data order and attacks.
        data_seed: Seed of the generated scenes.
        **settings: Overrides of :data:`EXPERIMENT_DEFAULTS`.

    Returns:
        ``{"map50", "map50_95", "robust_map50/<attack>", "robust_map50_95/<attack>", "seconds"}``.
    """
    from robust_lightning.lightning_modules.kgat.lightning_module import KGATDetector

    unknown = set(settings) - set(EXPERIMENT_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown settings {sorted(unknown)}; known: {sorted(EXPERIMENT_DEFAULTS)}")
    s = {**EXPERIMENT_DEFAULTS, **settings}
    pl.seed_everything(seed, workers=True, verbose=False)
    datamodule = SyntheticThermalDataModule(
        data_dir=str(root), n_train=s["n_train"], n_val=s["n_test"], n_test=s["n_test"], image_size=s["image_size"],
        batch_size=s["batch_size"], seed=data_seed,
    )
    eval_attacks = [
        DetectionAttack("mtd", eps=s["eval_eps"], alpha=s["eval_eps"], steps=1),
        DetectionAttack("combined", eps=s["eval_eps"], steps=s["eval_pgd_steps"]),
    ]
    module = KGATDetector(
        num_classes=3, recipe=recipe, attack_seed=seed, adversarial_images=s["adversarial_images"],
        train_attack=DetectionAttack("mtd", eps=s["train_eps"], alpha=s["train_eps"], steps=1),
        eval_attacks=eval_attacks,
        optimizer=lambda params: torch.optim.AdamW(params, lr=s["lr"], weight_decay=1e-4),
        **TINY_FCOS,
    )
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as run_dir, warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*never downloads weights.*")
        trainer = pl.Trainer(
            max_epochs=s["epochs"], accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
            gradient_clip_val=10.0, default_root_dir=run_dir, deterministic=False,
        )
        trainer.fit(module, datamodule=datamodule)
        results = trainer.test(module, datamodule=datamodule, verbose=False)[0]
    out = {key.removeprefix("test/"): float(value) for key, value in results.items() if key.startswith("test/")}
    out["seconds"] = time.perf_counter() - start
    return out


if __name__ == "__main__":  # pragma: no cover - a quick manual run
    print(run_synthetic_experiment(Path(os.environ.get("TMPDIR", "/tmp")) / "kgat_scenes", "plain", epochs=1))
