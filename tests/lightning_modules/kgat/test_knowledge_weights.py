"""KGAT's knowledge weights reach the training loss, and they are not constants.

A KGAT whose weights were forced to 1 (``loc_weight = 1.0`` in ``training_step``, or
``knowledge_weights`` returning ones) used to pass the whole suite: the factor functions were
tested on their own, and the training tests only checked the logged values' range. Here the
detector's predictions are fixed by hand so ``rho`` is known (``knowledge.py``: the predicted
and labelled per-class gray means under the same boxes agree exactly when the labels are right,
and a hottest-object-called-coldest swap gives rho = -0.8), the scene's classes fix ``w_rel2``
through the relation-stability matrix of the training split, and the training loss must be
``w_rel * w_rel2 * loc + cls + other`` with those values: constant weights fail every case.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

pytest.importorskip("mmdet", reason="KGAT needs the mmdet stack (make install builds it)")

from mmengine.structures import InstanceData

from robust_lightning.datamodules.infrared import (
    SyntheticThermalDataModule,
    collate_detection,
)
from robust_lightning.lightning_modules.kgat import KGATDetector
from robust_lightning.lightning_modules.kgat.knowledge import relation_stability_matrix
from tests.data.kgat import tiny_detector

PERSON, CAR, BICYCLE = 0, 1, 2
W_REL_CORRECT = 1.0 - math.log(1.5)  # rho = 1
W_REL_SWAPPED = 1.0 - math.log(1.0 - 0.4)  # rho = -0.8


@pytest.fixture(scope="module")
def datamodule(tmp_path_factory: pytest.TempPathFactory) -> SyntheticThermalDataModule:
    dm = SyntheticThermalDataModule(data_dir=str(tmp_path_factory.mktemp("kgat_w") / "scenes"), n_train=32, n_val=4,
                                    n_test=4, image_size=64, objects_per_image=[3, 4], batch_size=4, seed=3,
                                    hflip=False)
    dm.setup("fit")
    return dm


def _batch_with_all_classes(dm: SyntheticThermalDataModule) -> dict:
    """Training scenes that each hold every class, so the batch-mean gray vector keeps the
    per-image order car > person > background > bicycle."""
    dataset = dm._dataset("train")
    chosen = [dataset[i] for i in range(len(dataset)) if set(dataset[i]["labels"].tolist()) == {PERSON, CAR, BICYCLE}]
    assert len(chosen) >= 2, "the generated split must hold scenes with all three classes"
    return collate_detection(chosen[:4])


def _single_class_batch(dm: SyntheticThermalDataModule) -> dict:
    """The first such scene with only its cars kept."""
    sample = dict(_batch_with_all_classes(dm))
    keep = sample["labels"][0] == CAR
    return {"images": sample["images"][:1], "boxes": [sample["boxes"][0][keep]], "labels": [sample["labels"][0][keep]],
            "image_ids": sample["image_ids"][:1]}


def _module(dm: SyntheticThermalDataModule, *, swap: bool) -> KGATDetector:
    torch.manual_seed(0)
    module = KGATDetector(num_classes=3, recipe="kgat", adversarial_images=2, eval_attacks=[], **tiny_detector("fcos"))
    module.relation.copy_(relation_stability_matrix(dm.iter_train_gray(), dm.num_classes))
    module._relation_ready = True
    # The attack is not under test: the adversarial copies are the clean images.
    module._attack = lambda attack, images, samples: images.detach().clone()  # type: ignore[method-assign]

    def predictions(images: torch.Tensor, samples: list) -> list:
        out = []
        for sample in samples:
            labels = sample.gt_instances.labels.clone()
            if swap:
                labels = torch.where(labels == CAR, BICYCLE, torch.where(labels == BICYCLE, CAR, labels))
            out.append(InstanceData(bboxes=sample.gt_instances.bboxes.clone(), labels=labels,
                                    scores=torch.full((len(labels),), 0.9)))
        return out

    module._predict = predictions  # type: ignore[method-assign]
    return module


def _expected_loss(module: KGATDetector, batch: dict, loc_weight: float) -> torch.Tensor:
    n = min(module.adversarial_images, batch["images"].shape[0])
    images = torch.cat([batch["images"][:n], batch["images"]])
    boxes, labels = list(batch["boxes"]), list(batch["labels"])
    ids = batch["image_ids"].tolist()
    samples = module._samples(batch, images, boxes[:n] + boxes, labels[:n] + labels, ids[:n] + ids)
    parts = module.loss_parts(images, samples)
    return loc_weight * parts["loc"] + parts["cls"] + parts["other"]


def test_relation_matrix_of_the_scenes_makes_w_rel2_depend_on_the_classes_present(
        datamodule: SyntheticThermalDataModule) -> None:
    module = _module(datamodule, swap=False)
    relation = module.relation
    # The generated scenes keep car > person > bicycle in every image.
    assert float(relation[CAR, PERSON]) == 1.0 and float(relation[PERSON, BICYCLE]) == 1.0
    batch = _batch_with_all_classes(datamodule)
    images = batch["images"]
    weights = module.knowledge_weights(images, module._samples(batch, images), list(batch["labels"]))
    assert weights["w_rel2"] == pytest.approx(1.05)
    single = _single_class_batch(datamodule)
    weights_single = module.knowledge_weights(single["images"], module._samples(single, single["images"]),
                                              list(single["labels"]))
    assert weights_single["w_rel2"] == pytest.approx(1.0)
    # An unstable pair (order flips half the time) weighs less than a stable one.
    module.relation.copy_(torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [-1.0, -1.0, 0.0]]))
    weights_unstable = module.knowledge_weights(images, module._samples(batch, images), list(batch["labels"]))
    assert weights_unstable["w_rel2"] == pytest.approx(0.95 + 0.1 * 4 / 6)


@pytest.mark.parametrize(("swap", "rho", "w_rel"), [(False, 1.0, W_REL_CORRECT), (True, -0.8, W_REL_SWAPPED)])
def test_knowledge_weights_follow_the_gray_order_of_the_predictions(
        datamodule: SyntheticThermalDataModule, swap: bool, rho: float, w_rel: float) -> None:
    module = _module(datamodule, swap=swap)
    batch = _batch_with_all_classes(datamodule)
    images = batch["images"]
    weights = module.knowledge_weights(images, module._samples(batch, images), list(batch["labels"]))
    assert weights["rho"] == pytest.approx(rho)
    assert weights["w_rel"] == pytest.approx(w_rel)


def test_training_loss_scales_the_box_loss_by_both_knowledge_weights(datamodule: SyntheticThermalDataModule) -> None:
    batch = _batch_with_all_classes(datamodule)
    losses = {}
    for swap, w_rel in ((False, W_REL_CORRECT), (True, W_REL_SWAPPED)):
        module = _module(datamodule, swap=swap)
        loss = module.training_step(batch, 0)
        expected = _expected_loss(module, batch, w_rel * 1.05)
        unweighted = _expected_loss(module, batch, 1.0)
        assert float(loss) == pytest.approx(float(expected), rel=1e-5)
        assert abs(float(loss) - float(unweighted)) > 1e-3, "the box loss must not be left unweighted"
        losses[swap] = float(loss)
    # Same weights and data: only the knowledge weight differs between the two runs.
    assert losses[True] > losses[False]


def test_kgat_and_adversarial_recipes_differ_exactly_by_the_knowledge_weight(
        datamodule: SyntheticThermalDataModule, tmp_path: Path) -> None:
    batch = _batch_with_all_classes(datamodule)
    kgat = _module(datamodule, swap=True)
    adversarial = _module(datamodule, swap=True)
    adversarial.recipe = "adversarial"
    parts_loss_kgat = float(kgat.training_step(batch, 0))
    parts_loss_adv = float(adversarial.training_step(batch, 0))
    loc = float(_expected_loss(adversarial, batch, 1.0) - _expected_loss(adversarial, batch, 0.0))
    assert parts_loss_kgat - parts_loss_adv == pytest.approx((W_REL_SWAPPED * 1.05 - 1.0) * loc, rel=1e-4)
