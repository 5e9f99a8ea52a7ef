"""KGATDetector with real (small) mmdet detectors on generated thermal scenes."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

pytest.importorskip("mmdet", reason="KGAT needs the mmdet stack (make install builds it)")

from robust_lightning.attacks.detection import DetectionAttack
from robust_lightning.datamodules.infrared import SyntheticThermalDataModule
from robust_lightning.lightning_modules.kgat import (
    KGATDetector,
    MMDetDetector,
    build_detector_config,
)
from tests.data.kgat import DETECTORS, tiny_detector


@pytest.fixture(scope="module")
def datamodule(tmp_path_factory: pytest.TempPathFactory) -> SyntheticThermalDataModule:
    dm = SyntheticThermalDataModule(data_dir=str(tmp_path_factory.mktemp("kgat") / "scenes"), n_train=16, n_val=4,
                                    n_test=4, image_size=64, batch_size=4, seed=1)
    dm.prepare_data()
    dm.setup("fit")
    return dm


@pytest.fixture(scope="module")
def batch(datamodule: SyntheticThermalDataModule) -> dict:
    return next(iter(datamodule.val_dataloader()))


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_each_detector_family_gives_losses_attacks_and_predictions(name: str, batch: dict) -> None:
    torch.manual_seed(0)
    module = KGATDetector(num_classes=3, **tiny_detector(name))
    images = batch["images"]
    samples = module._samples(batch, images)
    parts = module.loss_parts(images, samples)
    assert all(torch.isfinite(v) for v in parts.values()) and float(parts["loc"]) > 0 and float(parts["cls"]) > 0
    params_before = [p.detach().clone() for p in module.parameters()]
    # Every objective on one family (the cheapest), MTD (which uses both parts) on all.
    for objective in ("cls", "loc", "combined", "mtd") if name == "fcos" else ("mtd",):
        attack = DetectionAttack(objective, eps="4/255", steps=1)
        adversarial = module._attack(attack, images, samples)
        assert adversarial.shape == images.shape
        assert float((adversarial - images).abs().max()) <= 4 / 255 + 1e-6
        assert not torch.equal(adversarial, images)
    # Attacks never touch the weights nor leave gradients on them.
    assert all(torch.equal(a, b) for a, b in zip(params_before, module.parameters(), strict=True))
    assert all(p.grad is None for p in module.parameters())
    predictions = module._predict(images, samples)
    assert len(predictions) == images.shape[0]
    assert all(p.bboxes.shape[-1] == 4 and p.scores.shape == p.labels.shape for p in predictions)


def test_attack_raises_the_attacked_loss(batch: dict) -> None:
    torch.manual_seed(0)
    module = KGATDetector(num_classes=3, **tiny_detector("fcos"))
    module.eval()
    images = batch["images"]
    samples = module._samples(batch, images)
    for objective in ("cls", "loc"):
        adversarial = module._attack(DetectionAttack(objective, eps="8/255", steps=3), images, samples)
        with torch.no_grad():
            clean, attacked = module.loss_parts(images, samples), module.loss_parts(adversarial, samples)
        assert float(attacked[objective]) > float(clean[objective])


@pytest.mark.parametrize("recipe", ["plain", "adversarial", "kgat"])
def test_recipes_train_validate_and_checkpoint(recipe: str, datamodule: SyntheticThermalDataModule, tmp_path: Path) -> None:
    pl.seed_everything(0)
    module = KGATDetector(num_classes=3, recipe=recipe, adversarial_images=2,
                          eval_attacks=[DetectionAttack("mtd", eps="4/255")], **tiny_detector("fcos"))
    before = [p.detach().clone() for p in module.parameters()]
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, accelerator="cpu", logger=False,
                         enable_progress_bar=False, default_root_dir=tmp_path, enable_model_summary=False)
    trainer.fit(module, datamodule=datamodule)
    metrics = trainer.callback_metrics
    for key in ("val/map50", "val/map50_95", "val/robust_map50/mtd_fgsm_eps4", "val/robust_map50_95/mtd_fgsm_eps4"):
        assert key in metrics and 0.0 <= float(metrics[key]) <= 1.0, key
    assert any(not torch.equal(a, b) for a, b in zip(before, module.parameters(), strict=True))
    if recipe == "kgat":
        assert {"train/rho", "train/w_rel", "train/w_rel2"} <= set(metrics)
        assert 0.59 <= float(metrics["train/w_rel"]) <= 1.7
        # R of the generated scenes: every class pair keeps its order -> w_rel2 = 1.05 with >= 2 classes.
        assert float(module.relation[1, 0]) == 1.0
    checkpoint = tmp_path / "kgat.ckpt"
    trainer.save_checkpoint(checkpoint)
    state = torch.load(checkpoint, weights_only=True)
    assert state["hyper_parameters"]["recipe"] == recipe
    restored = KGATDetector.load_from_checkpoint(checkpoint, weights_only=True)
    assert torch.equal(restored.relation, module.relation)


def test_relation_matrix_from_a_file_and_its_errors(tmp_path: Path) -> None:
    good = tmp_path / "R.pt"
    torch.save(torch.eye(3), good)
    module = KGATDetector(num_classes=3, relation_matrix=str(good), **tiny_detector("fcos"))
    assert torch.equal(module.relation, torch.eye(3))
    torch.save(torch.eye(2), tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"\(3, 3\) tensor"):
        KGATDetector(num_classes=3, relation_matrix=str(tmp_path / "bad.pt"), **tiny_detector("fcos"))
    with pytest.raises(FileNotFoundError, match="relation_matrix"):
        KGATDetector(num_classes=3, relation_matrix=str(tmp_path / "none.pt"), **tiny_detector("fcos"))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"recipe": "fancy"}, "recipe"),
        ({"adversarial_images": 0}, "adversarial_images"),
        ({"relation_beta": 1.0}, "relation_beta"),
        ({"attack_model_mode": "test"}, "attack_model_mode"),
        ({"eval_attacks": [DetectionAttack(), DetectionAttack()]}, "distinct names"),
        ({"detector": "mmdet::nope/none.py"}, "no config"),
        ({"detector": {"backbone": {}}}, "needs a 'type'"),
        ({"detector": 3}, "detector must be"),
        ({"num_classes": 0}, "num_classes"),
    ],
)
def test_bad_arguments_get_clear_errors(kwargs: dict, match: str) -> None:
    arguments = {"num_classes": 3, **tiny_detector("fcos"), **kwargs}
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        KGATDetector(**arguments)


def test_remote_pretrained_weights_are_dropped_with_a_warning() -> None:
    with pytest.warns(UserWarning, match="never downloads weights"):
        config = build_detector_config("mmdet::retinanet/retinanet_r50_fpn_1x_coco.py", num_classes=3)
    assert config["backbone"]["init_cfg"] is None
    assert config["bbox_head"]["num_classes"] == 3


def test_local_checkpoint_round_trip(tmp_path: Path) -> None:
    config, overrides = DETECTORS["fcos"]
    torch.manual_seed(0)
    first = MMDetDetector(config, 3, overrides=overrides)
    path = tmp_path / "detector.pth"
    torch.save({"state_dict": first.detector.state_dict()}, path)
    torch.manual_seed(1)
    second = MMDetDetector(config, 3, overrides=overrides, checkpoint=str(path))
    for a, b in zip(first.detector.state_dict().values(), second.detector.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_num_classes_must_match_the_datamodule(datamodule: SyntheticThermalDataModule, tmp_path: Path) -> None:
    module = KGATDetector(num_classes=4, recipe="plain", **tiny_detector("fcos"))
    trainer = pl.Trainer(fast_dev_run=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                         default_root_dir=tmp_path)
    with pytest.raises(ValueError, match="num_classes=4 but the datamodule has 3"):
        trainer.fit(module, datamodule=datamodule)
