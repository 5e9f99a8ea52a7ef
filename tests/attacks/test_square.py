"""Square attack: budget, score-only access, reproducibility, and agreement with torchattacks."""

from __future__ import annotations

import pytest
import torch

from robust_lightning.attacks.square import Square, p_selection, square_attack
from robust_lightning.errors import InvalidArgumentError
from tests.data.trained import digits_tensors, trained_digits_model


@pytest.fixture(scope="module")
def model_and_batch():
    model = trained_digits_model()
    x, y = digits_tensors("test")
    return model, x[:128], y[:128]


def _accuracy(model, x, y) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.1), ("l2", 1.0)])
def test_square_stays_in_budget_and_fools_the_model(model_and_batch, norm, eps):
    model, x, y = model_and_batch
    x_adv = square_attack(model, x, y, eps=eps, norm=norm, n_queries=300,
                          generator=torch.Generator().manual_seed(0))
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert size.max().item() <= eps * (1 + 1e-4)
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert _accuracy(model, x_adv, y) < _accuracy(model, x, y) - 0.3


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_square_attacks_images_taller_than_wide(model_and_batch, norm):
    """L2 used to cap its window by the height only and crashed on h > w."""
    model, x, y = model_and_batch
    x_tall = x[:16, :, :, 2:14]
    eps = 0.1 if norm == "linf" else 1.0
    x_adv = square_attack(model, x_tall, y[:16], eps=eps, norm=norm, n_queries=30,
                          generator=torch.Generator().manual_seed(0))
    delta = (x_adv - x_tall).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert x_adv.shape == x_tall.shape
    assert size.max().item() <= eps * (1 + 1e-4)
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert not torch.equal(x_adv, x_tall)


def test_square_uses_no_gradients_and_is_reproducible(model_and_batch):
    model, x, y = model_and_batch
    calls = []

    def logits_fn(points):
        calls.append(torch.is_grad_enabled())
        return model(points)

    runs = [square_attack(logits_fn, x[:32], y[:32], eps=0.1, n_queries=50,
                          generator=torch.Generator().manual_seed(3)) for _ in range(2)]
    assert calls and not any(calls)
    assert torch.equal(runs[0], runs[1])


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.1), ("l2", 1.0)])
def test_square_matches_torchattacks(norm, eps):
    """Mean robust accuracy over five seeds on 256 samples, ours vs torchattacks.Square.

    One run is too noisy to compare: with 300 queries a single seed moves robust accuracy by
    +-0.03 on the same samples (measured: L-inf 0.207-0.262 ours, 0.195-0.246 torchattacks), so
    the five-seed means are compared; they differed by +0.012 (L-inf) and -0.021 (L2).
    """
    torchattacks = pytest.importorskip("torchattacks")
    model = trained_digits_model()
    x, y = digits_tensors("test")
    x, y = x[:256], y[:256]
    seeds = range(5)
    ours = [_accuracy(model, square_attack(model, x, y, eps=eps, norm=norm, n_queries=300,
                                           generator=torch.Generator().manual_seed(seed)), y) for seed in seeds]
    reference = [_accuracy(model, torchattacks.Square(model, norm="Linf" if norm == "linf" else "L2", eps=eps,
                                                      n_queries=300, seed=seed)(x, y), y) for seed in seeds]
    assert abs(sum(ours) / len(ours) - sum(reference) / len(reference)) <= 0.03, (ours, reference)


def test_p_schedule_halves_at_the_reference_checkpoints():
    assert p_selection(0.8, 0, 10000) == 0.8
    assert p_selection(0.8, 11, 10000) == 0.4
    assert p_selection(0.8, 9000, 10000) == pytest.approx(0.8 / 512)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"n_queries": -1}, "n_queries must be an int >= 0, got -1"),
    ({"n_restarts": 0}, "n_restarts must be an int >= 1, got 0"),
    ({"p_init": 1.5}, "p_init must be a finite number > 0 and <= 1, got 1.5"),
])
def test_square_rejects_bad_arguments(kwargs, message):
    with pytest.raises(InvalidArgumentError, match=message):
        Square(**kwargs)


def test_square_rejects_an_unknown_norm():
    with pytest.raises(ValueError, match="norm"):
        Square(norm="l1")
