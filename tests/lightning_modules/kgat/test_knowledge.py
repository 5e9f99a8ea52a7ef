"""KGAT's knowledge terms on hand-made cases (no detector needed)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from robust_lightning.lightning_modules.kgat.knowledge import (
    background_gray_mean,
    class_gray_means,
    knowledge_gray_vectors,
    main,
    relation_stability_matrix,
    relation_weight,
    reliability_weight,
    spearman_rho,
    to_gray,
)


def test_spearman_is_one_for_identical_order_and_negative_for_reversed() -> None:
    labelled = torch.tensor([0.8, 0.5, 0.2, 0.3])
    assert spearman_rho(labelled * 0.9 + 0.01, labelled) == pytest.approx(1.0)
    reversed_order = torch.tensor([0.2, 0.3, 0.8, 0.5])
    assert spearman_rho(reversed_order, labelled) == pytest.approx(-1.0)
    assert spearman_rho(torch.tensor([0.5, 0.8, 0.2, 0.3]), labelled) < 1.0


@pytest.mark.parametrize(
    ("predicted", "labelled"),
    [
        ([0.0, 0.0, 0.4], [0.0, 0.0, 0.4]),  # one entry left after dropping absent classes
        ([0.7, 0.0, 0.4], [0.0, 0.0, 0.4]),  # the labelled vector has a single positive value
        ([0.4, 0.4, 0.4], [0.1, 0.2, 0.3]),  # constant predictions
        ([0.0, 0.0, 0.0], [0.0, 0.0, 0.0]),  # nothing present at all
    ],
)
def test_spearman_is_zero_when_degenerate(predicted: list[float], labelled: list[float]) -> None:
    assert spearman_rho(torch.tensor(predicted), torch.tensor(labelled)) == 0.0


def test_spearman_drops_classes_absent_in_both() -> None:
    # Without the filter the shared zeros would add tied ranks and change rho.
    assert spearman_rho(torch.tensor([0.9, 0.0, 0.5, 0.1]), torch.tensor([0.8, 0.0, 0.4, 0.2])) == pytest.approx(1.0)


def test_spearman_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="one shape"):
        spearman_rho(torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError, match="NaN"):
        spearman_rho(torch.tensor([float("nan"), 1.0]), torch.tensor([1.0, 2.0]))


def test_relation_weight_values() -> None:
    assert relation_weight(0.0) == pytest.approx(1.0)
    assert relation_weight(1.0) == pytest.approx(1.0 - math.log(1.5))
    assert relation_weight(-1.0) == pytest.approx(1.0 + math.log(2.0))
    assert relation_weight(-1.0) > relation_weight(0.0) > relation_weight(1.0)
    with pytest.raises(ValueError, match="rho"):
        relation_weight(1.5)
    with pytest.raises(ValueError, match="beta"):
        relation_weight(0.5, beta=1.0)


def test_reliability_weight_values() -> None:
    stable = torch.tensor([[0.0, 1.0, -1.0], [-1.0, 0.0, 1.0], [1.0, -1.0, 0.0]])
    assert reliability_weight(stable, torch.tensor([0, 1, 2])) == pytest.approx(1.05)
    assert reliability_weight(torch.zeros(3, 3), torch.tensor([0, 1, 2])) == pytest.approx(0.95)
    half = torch.tensor([[0.0, 0.5, 0.0], [-0.5, 0.0, 0.0], [0.0, 0.0, 0.0]])
    # Only the present pair (0, 1) counts: 0.95 + 0.1 * (0.5 + 0.5) / (4 - 2).
    assert reliability_weight(half, torch.tensor([1, 0, 0, 1])) == pytest.approx(1.0)
    # The diagonal never counts (a class has no order relation with itself).
    assert reliability_weight(torch.eye(3), torch.tensor([0, 1])) == pytest.approx(0.95)


@pytest.mark.parametrize("present", [[], [2], [1, 1, 1]])
def test_reliability_weight_is_neutral_below_two_classes(present: list[int]) -> None:
    assert reliability_weight(torch.ones(3, 3), torch.tensor(present, dtype=torch.long)) == 1.0


def test_reliability_weight_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="square"):
        reliability_weight(torch.zeros(2, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="present classes"):
        reliability_weight(torch.zeros(3, 3), torch.tensor([0, 3]))


def _image_with_objects() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gray = torch.full((20, 20), 0.1)
    boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0], [10.0, 10.0, 14.0, 14.0], [5.0, 12.0, 9.0, 16.0]])
    gray[0:4, 0:4] = 0.2
    gray[10:14, 10:14] = 0.4
    gray[12:16, 5:9] = 0.8
    return gray, boxes, torch.tensor([0, 0, 2])


def test_class_gray_means_average_box_means_and_zero_absent_classes() -> None:
    gray, boxes, labels = _image_with_objects()
    means = class_gray_means(gray, boxes, labels, num_classes=3)
    assert means.tolist() == pytest.approx([0.3, 0.0, 0.8])
    assert float(background_gray_mean(gray, boxes)) == pytest.approx(0.1)
    assert float(background_gray_mean(gray, torch.tensor([[0.0, 0.0, 30.0, 30.0]]))) == pytest.approx(0.0)


def test_to_gray_uses_the_luma_weights() -> None:
    rgb = torch.zeros(3, 2, 2)
    rgb[0], rgb[1], rgb[2] = 1.0, 0.5, 0.0
    assert float(to_gray(rgb)[0, 0]) == pytest.approx(0.2989 + 0.587 * 0.5)
    with pytest.raises(ValueError, match="image must be"):
        to_gray(torch.zeros(2, 4, 4))


def test_knowledge_vectors_agree_for_correct_predictions_and_disagree_for_swapped_labels() -> None:
    gray = torch.full((1, 1, 32, 32), 0.6)  # background between the classes: reversing them flips rho
    boxes = torch.tensor([[0.0, 0.0, 6.0, 6.0], [10.0, 10.0, 16.0, 16.0], [20.0, 20.0, 26.0, 26.0]])
    for value, (x1, y1, x2, y2) in zip((0.9, 0.5, 0.3), boxes.int().tolist(), strict=True):
        gray[0, 0, y1:y2, x1:x2] = value
    labels = torch.tensor([0, 1, 2])
    scores = torch.tensor([0.9, 0.8, 0.7])

    def rho(pred_labels: torch.Tensor) -> float:
        pred, gt = knowledge_gray_vectors(gray, [boxes], [scores], [pred_labels], [boxes], [labels], 3)
        return spearman_rho(pred, gt)

    assert rho(labels) == pytest.approx(1.0)
    assert rho(torch.tensor([2, 1, 0])) < 0  # the hottest object called the coldest class
    # Low-scoring predictions are ignored: nothing above the threshold -> only background.
    pred, _ = knowledge_gray_vectors(gray, [boxes], [scores * 0.1], [labels], [boxes], [labels], 3)
    assert pred[:3].tolist() == [0.0, 0.0, 0.0]


def test_relation_matrix_measures_the_stability_of_the_pairwise_order() -> None:
    def image(values: dict[int, float]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        gray = torch.zeros(16, 16)
        boxes, labels = [], []
        for k, value in values.items():
            gray[:4, 4 * k:4 * k + 4] = value
            boxes.append([4.0 * k, 0.0, 4.0 * k + 4, 4.0])
            labels.append(k)
        return gray, torch.tensor(boxes), torch.tensor(labels)

    samples = [image({0: 0.9, 1: 0.5, 2: 0.3}), image({0: 0.8, 1: 0.6, 2: 0.7}), image({0: 0.7}), image({2: 0.1, 3: 0.2})]
    relation = relation_stability_matrix(samples, num_classes=4)
    assert relation[0, 1] == 1.0 and relation[1, 0] == -1.0  # class 0 always brighter than 1
    assert relation[1, 2] == 0.0  # the order of 1 and 2 flips once in two images
    assert relation[0, 2] == 1.0 and relation[2, 3] == -1.0
    assert relation[0, 3] == 0.0  # never together
    assert torch.equal(relation, -relation.T) and relation.diagonal().abs().sum() == 0
    with pytest.raises(ValueError, match="labels must be in"):
        relation_stability_matrix([image({5: 0.5, 0: 0.1})], num_classes=4)


def test_relation_script_writes_a_weights_only_tensor_and_never_overwrites(tmp_path: Path, capsys) -> None:
    from robust_lightning.datamodules.infrared import generate_thermal_scenes

    root = generate_thermal_scenes(tmp_path / "scenes", n_train=12, n_val=2, n_test=2, image_size=48)
    out = tmp_path / "R.pt"
    main(["--annotations", str(root / "annotations" / "train.json"), "--images", str(root / "images" / "train"),
          "--out", str(out)])
    relation = torch.load(out, weights_only=True)
    assert relation.shape == (3, 3)
    # car > person > bicycle in every generated image: every co-occurring pair is fully stable.
    assert relation[1, 0] == 1.0 and relation[0, 2] == 1.0 and relation[1, 2] == 1.0
    with pytest.raises(SystemExit, match="refusing to overwrite"):
        main(["--annotations", str(root / "annotations" / "train.json"), "--images", str(root / "images" / "train"),
              "--out", str(out)])
