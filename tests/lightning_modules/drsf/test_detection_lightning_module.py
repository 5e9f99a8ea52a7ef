"""DRSFDetector on a real (small) mmdet FCOS with style-shifted thermal scenes."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

pytest.importorskip("mmdet", reason="DRSF detection needs the mmdet stack (make install builds it)")

from robust_lightning.datamodules.thermal_styles import SyntheticThermalStylesDataModule
from robust_lightning.errors import InvalidArgumentError
from robust_lightning.lightning_modules.drsf import DRSFDetector
from tests.data.kgat import tiny_detector

HEADS = {"image_head_hidden": 16, "instance_head_hidden": 32, "instances_per_image": 8, "mask_block_size": 16}


@pytest.fixture(scope="module")
def datamodule(tmp_path_factory: pytest.TempPathFactory) -> SyntheticThermalStylesDataModule:
    dm = SyntheticThermalStylesDataModule(data_dir=str(tmp_path_factory.mktemp("drsf_det") / "scenes"), n_train=8,
                                          n_val=4, n_test=4, image_size=64, batch_size=4, seed=1, hflip=False)
    dm.setup("fit")
    return dm


@pytest.fixture(scope="module")
def batch(datamodule: SyntheticThermalStylesDataModule) -> dict:
    # The sampler's seed defaults to torch.initial_seed(): fix it, so which scenes form the batch
    # does not depend on the tests that ran before in this worker.
    torch.manual_seed(0)
    return next(iter(datamodule.train_dataloader()))


def _module(keep_low_scores: bool = False, **kwargs: object) -> DRSFDetector:
    torch.manual_seed(0)
    detector = tiny_detector("fcos")
    if keep_low_scores:  # an untrained FCOS scores ~0.005, below its test_cfg's 0.05
        detector["detector_overrides"]["test_cfg.score_thr"] = 0.0
    return DRSFDetector(num_classes=3, **{**HEADS, **kwargs}, **detector)


def test_every_drsf_loss_is_finite_and_the_domain_heads_train(batch: dict) -> None:
    module = _module(keep_low_scores=True, pseudo_label_threshold=0.0)
    losses = module.drsf_losses(batch)
    assert {"detection", "da_image", "da_instance", "da_consistency", "pseudo_label"} <= set(losses)
    assert all(bool(torch.isfinite(v)) for v in losses.values()), losses
    assert float(losses["pseudo_label"]) > 0, "the masked pass learns the teacher's labels"
    torch.stack(list(losses.values())).sum().backward()
    assert module.image_head.levels[0][0].weight.grad.abs().sum() > 0
    assert module.instance_head.net[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in module.teacher.parameters())


def _backbone_grad(module: DRSFDetector, batch: dict, key: str) -> torch.Tensor:
    module.zero_grad()
    module.drsf_losses(batch)[key].backward()
    return module.model.detector.backbone.conv1.weight.grad.clone()


@pytest.mark.parametrize(("key", "weight_name", "weight"), [("da_image", "image_grl_weight", 0.025),
                                                             ("da_instance", "instance_grl_weight", 0.1)])
def test_domain_losses_reach_the_backbone_reversed_and_scaled(batch: dict, key: str, weight_name: str,
                                                              weight: float) -> None:
    """The backbone's gradient from a domain loss is -w times what it would be without the GRL."""
    reversed_ = _module(pseudo_labels=False, **{weight_name: weight})
    reference = _module(pseudo_labels=False, **{weight_name: 1.0})
    # Same initialisation: the backbones agree, so their domain gradients differ only by the scale.
    reference.load_state_dict(reversed_.state_dict())
    torch.manual_seed(1)
    g_rev = _backbone_grad(reversed_, batch, key)
    torch.manual_seed(1)
    g_ref = _backbone_grad(reference, batch, key)
    # reference uses weight 1 => its backbone gradient is -1 x (head gradient); ours -w x.
    assert g_ref.abs().sum() > 0
    assert torch.allclose(g_rev, weight * g_ref, rtol=1e-3, atol=1e-10)
    off = _module(pseudo_labels=False, **{weight_name: 0.0})
    off.load_state_dict(reversed_.state_dict())
    torch.manual_seed(1)
    assert _backbone_grad(off, batch, key).abs().sum() == 0


def test_pseudo_labels_follow_the_threshold(batch: dict) -> None:
    strict = _module(keep_low_scores=True, pseudo_label_threshold=1.0)
    strict.drsf_losses(batch)
    losses = strict.drsf_losses(batch)
    assert float(losses["pseudo_label"]) == 0.0  # no teacher score reaches 1
    assert "pseudo_label" not in _module(pseudo_labels=False).drsf_losses(batch)


def test_teacher_is_an_ema_of_the_student(datamodule: SyntheticThermalStylesDataModule, tmp_path: Path) -> None:
    pl.seed_everything(0)
    module = _module(keep_low_scores=True, pseudo_label_threshold=0.0, teacher_alpha=0.9)
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, accelerator="cpu", logger=False,
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                         default_root_dir=tmp_path)
    trainer.fit(module, datamodule=datamodule)
    student = dict(module.model.named_parameters())
    teacher = dict(module.teacher.model["model"].named_parameters())
    name = "detector.backbone.conv1.weight"
    assert not torch.equal(student[name], teacher[name]), "the teacher lags the student"
    assert {"val/map50", "val/map50_95"} <= set(trainer.callback_metrics)
    # Only the student is optimised.
    optimised = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert not any(id(p) in optimised for p in module.teacher.parameters())
    tested = trainer.test(module, datamodule=datamodule, verbose=False)[0]
    assert 0.0 <= tested["test/map50"] <= 1.0


@pytest.mark.parametrize("options", [{"reassembly": True}, {"fusion_weight": 0.1}, {"method": "plain"}])
def test_options_train_one_step(options: dict, datamodule: SyntheticThermalStylesDataModule, tmp_path: Path) -> None:
    module = _module(**options)
    trainer = pl.Trainer(fast_dev_run=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(module, datamodule=datamodule)
    metrics = trainer.callback_metrics
    if options.get("reassembly"):
        assert "train/entropy_guidance" in metrics
    if options.get("fusion_weight"):
        assert "train/soft_fusion" in metrics
    if options.get("method") == "plain":
        assert "train/da_image" not in metrics


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"method": "mic"}, "method"),
    ({"image_grl_weight": -1.0}, "image_grl_weight"),
    ({"mask_ratio": 1.0}, "mask_ratio"),
    ({"pseudo_label_threshold": 2.0}, "pseudo_label_threshold"),
    ({"instances_per_image": 0}, "instances_per_image"),
])
def test_bad_arguments_name_the_argument(kwargs: dict, match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        _module(**kwargs)


def test_two_stage_detectors_are_rejected() -> None:
    with pytest.raises(InvalidArgumentError, match="one-stage"):
        DRSFDetector(num_classes=3, **tiny_detector("faster_rcnn"))
