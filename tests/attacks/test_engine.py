"""AttackEngine: compile / channels-last / bf16 options give the plain path's numbers."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robust_lightning.attacks.base import PGD
from robust_lightning.attacks.core import attack_mode
from robust_lightning.attacks.engine import AttackEngine
from robust_lightning.errors import InvalidArgumentError


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 64, 10))


def _loss(x, model, y):
    return F.cross_entropy(model(x).float(), y, reduction="none")


def _attack(engine: AttackEngine | None, model, x, y, seed=0):
    gen = torch.Generator().manual_seed(seed)
    attack = PGD(eps=0.1, alpha=0.025, steps=5)
    with attack_mode(model):
        if engine is None:
            return attack(lambda z: _loss(z, model, y), x, generator=gen)
        engine.prepare_module(model)
        return attack(engine.wrap(("loss", id(model)), _loss, model, y), engine.prepare_inputs(x),
                      generator=gen)


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(1)
    return torch.rand(16, 1, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g)


def test_channels_last_matches_plain(data):
    x, y = data
    plain = _attack(None, _model(), x, y)
    fast = _attack(AttackEngine(channels_last=True), _model(), x, y)
    assert fast.is_contiguous(memory_format=torch.channels_last)
    # Same algorithm, different summation order: a sign flip of a near-zero gradient entry
    # can move an element by one step; allow at most 1% of elements.
    assert (plain - fast).abs().gt(1e-5).float().mean() < 0.01


def test_bf16_keeps_fp32_perturbation_and_strength(data):
    x, y = data
    model = _model()
    plain = _attack(None, model, x, y)
    fast = _attack(AttackEngine(attack_precision="bf16"), model, x, y)
    assert fast.dtype == torch.float32
    assert (fast - x).abs().max() <= 0.1 + 1e-6
    with torch.no_grad(), attack_mode(model):
        clean, loss_plain, loss_fast = (_loss(z, model, y).mean() for z in (x, plain, fast))
    # Tolerance: the bf16 attack reaches at least 95% of the plain attack's loss increase.
    assert loss_fast - clean >= 0.95 * (loss_plain - clean)


def test_compile_counts_graphs_and_second_epoch_does_not_recompile(data):
    x, y = data
    model = _model()
    engine = AttackEngine(compile=True, compile_backend="eager")
    plain = _attack(None, model, x, y)
    first = _attack(engine, model, x, y)
    count = engine.compile_count
    assert count >= 1
    torch.testing.assert_close(first, plain)
    for seed in range(3):  # a "second epoch": same shapes, new batches
        _attack(engine, model, torch.rand_like(x), y, seed)
    assert engine.compile_count == count


def test_compile_failure_falls_back_with_one_warning(data):
    x, y = data
    model = _model()

    def broken(graph_module, example_inputs, **kwargs):
        raise RuntimeError("backend exploded")

    engine = AttackEngine(compile=True, compile_backend=broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = _attack(engine, model, x, y)
        _attack(engine, model, x, y)
    messages = [w for w in caught if "AttackEngine" in str(w.message)]
    assert len(messages) == 1
    torch.testing.assert_close(out, _attack(None, model, x, y))


def test_bad_precision_is_named():
    with pytest.raises(InvalidArgumentError, match="attack_precision"):
        AttackEngine(attack_precision="fp8")


def test_nfgsm_can_exceed_eps_and_is_not_projected(data):
    from robust_lightning.attacks.base import NFGSM

    x, y = data
    x = 0.25 + 0.5 * x  # away from the bounds so the clamp does not hide the radius
    model = _model()
    with attack_mode(model):
        out = NFGSM(eps=0.1)(lambda z: _loss(z, model, y), x, generator=torch.Generator().manual_seed(0))
    delta = (out - x).abs()
    assert delta.max() > 0.1 + 1e-3  # beyond eps: no projection
    assert delta.max() <= 0.3 + 1e-6  # at most noise 2 eps + step eps
